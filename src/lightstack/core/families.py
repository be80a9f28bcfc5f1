"""The model families core serves, registered by import path and imported on first use.

Core never imports a family: the package root (``lightstack/families.py``) registers each
family's name, config class and command group as ``"module:attribute"`` strings, and core
imports a family only when a config or a command names it. A third family is a new folder
beside ``physics/`` and ``video/`` plus one ``register_family`` line.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightstack.core.config import ConfigError, RunConfig


@dataclass(frozen=True)
class Family:
    """One family: its ``family:`` name in configs and where its pieces live."""

    name: str
    schema: str  # "package.module:ConfigClass", a RunConfig subclass
    commands: str  # "package.module:typer_app", the `lightstack <name> ...` command group


_FAMILIES: dict[str, Family] = {}


def register_family(name: str, *, schema: str, commands: str) -> None:
    """Make ``name`` known to ``config validate``, ``launch`` and the command line."""
    for what, path in (("schema", schema), ("commands", commands)):
        if path.count(":") != 1:
            raise ValueError(f"family {name!r}: {what} must be 'module:attribute', got {path!r}")
    _FAMILIES[name] = Family(name, schema, commands)


def family_names() -> tuple[str, ...]:
    """Registered family names, in registration order."""
    return tuple(_FAMILIES)


def _family(name: object, source: str | Path) -> Family:
    if isinstance(name, str) and name in _FAMILIES:
        return _FAMILIES[name]
    known = ", ".join(map(repr, _FAMILIES)) or "none registered"
    raise ConfigError(str(source), [("family", f"expected one of {known}, got {name!r}")])


def _load(path: str) -> Any:
    module, attribute = path.split(":")
    return getattr(importlib.import_module(module), attribute)


def schema_for(family: object, source: str | Path) -> type[RunConfig]:
    """The config class for ``family`` (the ``family:`` key of the config file ``source``)."""
    return _load(_family(family, source).schema)


def command_group(family: str) -> Any:
    """The typer app of ``lightstack <family> ...``, imported now."""
    return _load(_family(family, "command line").commands)
