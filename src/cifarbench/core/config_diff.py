"""Resolved configs as plain dicts, and the differences between two of them by dotted key."""
from __future__ import annotations

from omegaconf import OmegaConf


def plain_config(cfg) -> dict:
    """A DictConfig resolved (interpolations filled in) into plain dicts and lists."""
    return OmegaConf.to_container(cfg, resolve=True)


def flatten(tree: dict, prefix: str = "") -> dict:
    """A nested config as {dotted key: value}; an empty group is one value ({})."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def within(key: str, keys) -> bool:
    """Whether dotted `key` is one of `keys` or lies inside one of them (`logger` holds `logger.mlflow.run_id`)."""
    return any(key == k or key.startswith(f"{k}.") for k in keys)


def config_changes(saved: dict, current: dict, allowed=frozenset()) -> list[str]:
    """'key: saved → current' for every dotted key whose value differs, except the `allowed` ones (a key
    or a group: `logger` allows `logger.mlflow.tracking_uri`)."""
    old, new = flatten(saved), flatten(current)
    missing = object()
    return [f"{key}: {old.get(key, missing)!r} → {new.get(key, missing)!r}".replace(repr(missing), "(absent)")
            for key in sorted(old.keys() | new.keys())
            if not within(key, allowed) and old.get(key, missing) != new.get(key, missing)]
