"""Put on PYTHONPATH with $SLOW_STEP_S set, by tests that signal a run while it trains (tests/engine/
test_interrupt.py, test_distributed.py): in every Python process started so (the run's, torchrun's workers,
submitit's tasks), each training forward of a cifarbench network first sleeps $SLOW_STEP_S seconds.
Python imports `sitecustomize` at start-up; this one patches cifarbench.engine.build.build_model once that
module is imported, and does nothing else (no import of its own)."""
import importlib.abc
import importlib.util
import os
import sys
import time

TARGET = "cifarbench.engine.build"


class SlowSteps(importlib.abc.MetaPathFinder):
    """Finds TARGET through the other finders, and patches its build_model after it executes."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute, pause = spec.loader.exec_module, float(os.environ["SLOW_STEP_S"])

        def exec_module(module):
            execute(module)
            build = module.build_model

            def slowed(*args, **kwargs):
                model = build(*args, **kwargs)
                model.register_forward_pre_hook(lambda m, inputs: time.sleep(pause) if m.training else None)
                return model

            module.build_model = slowed

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("SLOW_STEP_S"):
    sys.meta_path.insert(0, SlowSteps())
