"""Name → builder registries, so configs name models, optimizers, schedules and augmentations by string."""
from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


class Registry:
    """A dict of builders with a decorator to fill it and errors that list what exists.

    Configs pass fields straight through; a field left `null` in YAML means "the builder's default",
    so `build` drops None values before calling.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self.info: dict[str, str] = {}  # a short note per entry, e.g. the SPEC section a model reproduces

    def register(self, name: str | None = None, info: str = ""):
        def add(fn):
            key = name or fn.__name__
            if key in self._builders:
                log.warning("%s %r registered twice; the later one wins", self.kind, key)
            self._builders[key] = fn
            self.info[key] = info
            return fn

        return add

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, *args, **fields) -> Any:
        """Call the builder `name` with the given fields, None-valued ones dropped."""
        builder = self.get(name)
        fields = {k: v for k, v in fields.items() if v is not None}
        params = inspect.signature(builder).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(fields) - set(params))
            if unknown:
                known = [key for key, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty]
                raise ConfigError(
                    f"{self.kind} {name!r} has no field(s) {', '.join(unknown)}; "
                    f"its fields are: {', '.join(known) or '(none)'}"
                )
        return builder(*args, **fields)
