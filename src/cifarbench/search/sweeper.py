"""What both of cifarbench's sweepers share (search/optuna_search.py, search/halving.py): the launcher
made at setup, the search space read from `hydra.sweeper.params` and the command line, and the sweep
folder with its `multirun.yaml` (which report/rungs.py and commands/train.py's resume hint read back)."""
from __future__ import annotations

from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf

from cifarbench.core.files import atomic_write_text
from cifarbench.run.layout import RunFolder


def sweep_overrides(parser: OverridesParser, params: dict | None, arguments: list[str]) -> list[Override]:
    """The overrides a sweep searches or fixes: `params` (`hydra.sweeper.params`, {key: override text})
    first, then the command line's `arguments`, parsed by Hydra's `parser`. Raises Hydra's
    OverrideParseException for text that is not an override."""
    return parser.parse_overrides([*(f"{key}={value}" for key, value in (params or {}).items()), *arguments])


def cartesian(overrides: list[Override]) -> list[list[str]]:
    """Every job (its overrides) of the cartesian product of the parsed `overrides`' sweeps, in Hydra's
    basic sweeper's order (`a=1,2 b=x,y`: a=1 b=x, a=1 b=y, a=2 b=x, a=2 b=y)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def compose_job(loader, sweep_config: DictConfig, overrides: list[str], num: int = 0) -> tuple[DictConfig, DictConfig]:
    """Job `num` of a sweep as Hydra's launchers compose it: (its config, hydra node included, made Hydra's
    current config so that ${hydra:...} resolves; its task config: without the hydra node, resolved).
    Raises what Hydra and OmegaConf raise for an override or interpolation that does not hold."""
    import copy

    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.num = cfg.hydra.job.id = num
    HydraConfig.instance().set_config(cfg)
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    OmegaConf.resolve(task)
    return cfg, task


def job_error(ret: JobReturn) -> str | None:
    """Why a job gave no result, in one line: the exception it raised, else the error its summary.json
    records (a job refused by the config checks returns -inf and records why); None for a job that ran."""
    if ret.status == JobStatus.FAILED:
        try:
            ret.return_value  # (re-raises what the job raised)
        except BaseException as e:  # noqa: BLE001 - any exception a job raised is its error
            return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"
    folder = RunFolder(ret.hydra_cfg.hydra.runtime.output_dir) if ret.hydra_cfg is not None else None
    summary = (folder.read_summary() if folder else None) or {}
    return summary.get("error") if summary.get("status") == "failed" else None


def require_some_result(results: list[JobReturn], what: str):
    """Raise HydraException, in one line naming the first job's error, when not one of `results` trained
    (each raised or was refused: a config every job shares is wrong, and the sweep would go on for nothing)."""
    errors = [job_error(ret) for ret in results]
    if results and all(errors):
        raise HydraException(f"every job of {what} failed; the first: {errors[0]}")


class CifarbenchSweeper(Sweeper):
    """A Hydra sweeper that launches its jobs through the configured launcher. params: more sweeps
    (`hydra.sweeper.params`). Subclasses implement `sweep(arguments)`."""

    def __init__(self, params: dict | None = None):
        super().__init__()
        self.params = params or {}
        self.hydra_context = self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.check()  # (here, not in __init__: Hydra would wrap the message in its own)
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def check(self):
        """Raise HydraException, in one line, for fields that cannot work (subclasses)."""

    def check_job(self, overrides: list[str]):
        """Compose one job of this sweep (the sweep's config with `overrides`) as the launcher will and check
        it as every run is checked (validate.py), before any job starts: a value every job shares that
        cannot work (a validation split larger than debug=quick's training images) is one line, exit 2,
        not a search of failed trials. Raises HydraException with the check's message."""
        from cifarbench.core.registry import ConfigError
        from cifarbench.validate import validate_config

        try:
            validate_config(compose_job(self.hydra_context.config_loader, self.config, overrides)[1], 1)
        except ConfigError as e:
            raise HydraException(str(e)) from e

    def overrides(self, arguments: list[str]) -> list[Override]:
        """`sweep_overrides` of this sweeper's params and the command line's `arguments`."""
        return sweep_overrides(OverridesParser.create(config_loader=self.hydra_context.config_loader),
                               self.params, arguments)

    def open_sweep_dir(self) -> Path:
        """The sweep folder (`hydra.sweep.dir`), made, with the sweep's config written atomically into its
        multirun.yaml (a reader never sees half of it)."""
        sweep_dir = Path(self.config.hydra.sweep.dir)
        atomic_write_text(sweep_dir / "multirun.yaml", OmegaConf.to_yaml(self.config))
        return sweep_dir
