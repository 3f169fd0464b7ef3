"""The `key=value` arguments of the commands that take them (`predict`, `inspect`)."""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf


def key_value_args(argv: list[str], usage_line: str, required: tuple[str, ...]) -> DictConfig:
    """The `key=value` arguments of a command, as a config. `-h`/`--help` prints `usage_line` and exits
    0; a missing required key or an argument that is not `key=value` prints it and exits 2."""
    if {"-h", "--help"} & set(argv):
        print(usage_line)
        sys.exit(0)
    bad = [arg for arg in argv if "=" not in arg]
    args = OmegaConf.from_dotlist([arg for arg in argv if "=" in arg])
    missing = [key for key in required if not args.get(key)]
    if bad or missing:
        problem = f"not key=value: {' '.join(bad)}" if bad else f"missing {', '.join(missing)}"
        print(f"{usage_line}\n({problem})", file=sys.stderr)
        sys.exit(2)
    return args
