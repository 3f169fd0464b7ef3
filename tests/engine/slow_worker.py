"""`python tests/engine/slow_worker.py OVERRIDE...`: `cifarbench OVERRIDE...` (cli.main, Hydra and all) with
every training forward slowed by $SLOW_STEP_S seconds, so that a test can send a signal while the run
trains (tests/engine/test_interrupt.py, on its own and under torchrun). Its exit status is cifarbench's."""
import os
import sys
import time
from unittest import mock


def main(args: list[str]):
    from cifarbench.commands import cli
    from cifarbench.engine import build as engine_build

    pause, build = float(os.environ.get("SLOW_STEP_S", "0.1")), engine_build.build_model

    def slowed(*a, **k):
        model = build(*a, **k)
        model.register_forward_pre_hook(lambda module, inputs: time.sleep(pause) if module.training else None)
        return model

    with mock.patch.object(engine_build, "build_model", slowed), mock.patch.object(sys, "argv", ["cifarbench", *args]):
        cli.main()


if __name__ == "__main__":
    main(sys.argv[1:])
