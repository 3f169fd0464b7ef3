"""`python -m cifarbench` / `cifarbench`: a thin Hydra wrapper around `trainer.train`."""
from __future__ import annotations

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
    from cifarbench.trainer import ConfigError, train

    try:
        summary = train(cfg, HydraConfig.get().runtime.output_dir)
    except (DatasetError, ConfigError) as e:
        log.error("%s", e)
        sys.exit(2)
    return summary["best_test_acc"]


def main():
    run()


if __name__ == "__main__":
    main()
