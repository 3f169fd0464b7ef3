"""Hyper-parameter searches, as Hydra sweepers (registered by the `hydra_plugins.cifarbench_sweepers`
package, which Hydra finds by its name):

- `hydra/sweeper=optuna` (`optuna_search.py`): Optuna ≥ 4 through its ask-and-tell interface; the study in
  SQLite (in the sweep folder unless `hydra.sweeper.storage` says where), so a search run again continues
  it; trials in batches of `n_jobs` through the chosen launcher; a pruner (median, successive halving,
  Hyperband) that stops a bad trial at an evaluation (`trial.py`, in the job's process).
- `hydra/sweeper=successive_halving` (`halving.py`): every configuration trained to the end of a small
  budget, the best 1/η rerun at η× the budget, until one remains.

Both maximise what the task function returns (`run.metrics.objective`: the final validation accuracy
with `data.val_split`, else the final test accuracy); `sweeper.py` holds what they share (setup, the
search space's parsing, the sweep folder's multirun.yaml). This floor sits beside `commands/`: it
launches jobs, and only these import it: the plugin package, `commands/train.py` (the trial's reporter),
`commands/plan.py` (a sweep's jobs, as the sweepers draw them) and `cifarbench/__init__.py`
(`make_plugin_findable`). Optuna is imported only inside the functions a search calls (trial.py,
optuna_search.py), so importing this package or the plugin does not import it.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

PLUGIN = "hydra_plugins.cifarbench_sweepers"


def make_plugin_findable():
    """Hydra finds plugins by listing the folders of the `hydra_plugins` namespace package. A wheel puts
    ours in site-packages' folder, but an editable install (`pip install -e .`, setuptools' import hook)
    lists no folder, so Hydra would not see the sweepers: the folder that holds the plugin (where the
    import system finds it, else `src/hydra_plugins` beside this package, for an editable install made
    before the plugin existed) is added to the namespace's path when it is missing there. Cheap: finds the
    plugin's file without importing it."""
    try:
        namespace = importlib.import_module("hydra_plugins")
        spec = importlib.util.find_spec(PLUGIN)
    except ImportError:
        return
    folder = (Path(spec.origin).parents[1] if spec is not None and spec.origin is not None
              else Path(__file__).resolve().parents[2] / "hydra_plugins")
    if (folder / PLUGIN.rpartition(".")[2]).is_dir() and str(folder) not in list(namespace.__path__):
        # A plain list: a namespace's own path object recomputes itself (dropping the folder) when sys.path changes.
        namespace.__path__ = [*namespace.__path__, str(folder)]
