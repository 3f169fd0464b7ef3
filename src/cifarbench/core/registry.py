"""Name → builder registries, so configs name models, optimizers, schedules and augmentations by string."""
from __future__ import annotations

import difflib
import inspect
import logging
import sys
import typing
from typing import Any, Callable

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the allowed values."""


def _initials(name: str) -> str:
    return "".join(part[:1] for part in name.split("_"))


def did_you_mean(name: str, known) -> str:
    """' (did you mean X?)' for the known name closest to `name`: one that abbreviates it (learning_rate
    → lr), else one it begins (pad → pad_mode), else the closest spelling; '' when none is close."""
    known = list(known)
    close = ([k for k in known if "_" in name and k == _initials(name)] or [k for k in known if k.startswith(name)]
             or difflib.get_close_matches(name, known, n=1))
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_fields(where: str, unknown, known) -> ConfigError:
    """The error for fields `unknown` of `where` (e.g. "optim 'sgd'"): each with its nearest known
    name, then every field `where` has."""
    named = ", ".join(f"{field}{did_you_mean(field, known)}" for field in unknown)
    return ConfigError(f"{where} has no field(s) {named}; its fields are: {', '.join(known) or '(none)'}")


class Registry:
    """A dict of builders with a decorator to fill it and errors that list what exists.

    Configs pass fields straight through; a field left `null` in YAML means "the builder's default",
    so `build` drops None values before calling.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}
        self.info: dict[str, str] = {}  # a short note per entry, e.g. the study (docs/studies.md) a model reproduces

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
            raise ConfigError(f"unknown {self.kind} {name!r}{did_you_mean(str(name), self.names())}; "
                              f"available: {', '.join(self.names())}")
        return self._builders[name]

    def fields(self, name: str) -> list[str] | None:
        """The config fields builder `name` takes (its keyword arguments), or None if it takes any."""
        params = inspect.signature(self.get(name)).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return None
        return [key for key, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty]

    def annotations(self, name: str) -> dict[str, Any]:
        """The type each argument of builder `name` is annotated with (postponed annotations evaluated in
        the builder's module); arguments without one are left out."""
        builder = self.get(name)
        namespace = vars(sys.modules.get(builder.__module__, typing))
        found = {}
        for key, parameter in inspect.signature(builder).parameters.items():
            hint = parameter.annotation
            if isinstance(hint, str):  # (postponed annotations)
                try:
                    hint = eval(hint, namespace)  # noqa: S307  the module's own annotation
                except Exception:
                    continue
            if hint is not parameter.empty:
                found[key] = hint
        return found

    def build(self, name: str, *args, **fields) -> Any:
        """Call the builder `name` with the given fields, None-valued ones dropped."""
        known = self.fields(name)
        fields = {k: v for k, v in fields.items() if v is not None}
        if known is not None and set(fields) - set(known):
            raise unknown_fields(f"{self.kind} {name!r}", sorted(set(fields) - set(known)), known)
        return self.get(name)(*args, **fields)
