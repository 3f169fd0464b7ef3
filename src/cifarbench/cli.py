"""`python -m cifarbench` / `cifarbench`: a thin Hydra wrapper around `trainer.train`."""
from __future__ import annotations

import importlib
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger("cifarbench")


@hydra.main(version_base="1.3", config_path="pkg://cifarbench.conf", config_name="config")
def run(cfg: DictConfig) -> float:
    """Train one job; returns the objective a Hydra sweeper maximises (best test accuracy)."""
    from cifarbench.data import DatasetError
    from cifarbench.registry import ConfigError
    from cifarbench.trainer import train

    try:
        summary = train(cfg, HydraConfig.get().runtime.output_dir)
    except (DatasetError, ConfigError) as e:
        log.error("%s", e)
        sys.exit(2)
    return summary["best_test_acc"]


# `cifarbench NAME ...` runs `python -m MODULE ...`; each module has main(argv).
SUBCOMMANDS = {"models": "cifarbench.models.__main__", "report": "cifarbench.report",
               "predict": "cifarbench.predict"}


def main():
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:
        sys.exit(importlib.import_module(SUBCOMMANDS[sys.argv[1]]).main(sys.argv[2:]))
    run()


if __name__ == "__main__":
    main()
