"""The model families lightstack trains, and the config schema of each."""

from __future__ import annotations

from pathlib import Path

from lightstack.core.config import ConfigError, RunConfig

FAMILIES = ("physics", "video")


def schema_for(family: object, source: str | Path) -> type[RunConfig]:
    """The config class for ``family`` (the ``family:`` key of a config file)."""
    if family == "physics":
        from lightstack.physics.config import PhysicsConfig

        return PhysicsConfig
    if family == "video":
        from lightstack.video.config import VideoConfig

        return VideoConfig
    raise ConfigError(
        str(source),
        [("family", f"expected one of {', '.join(map(repr, FAMILIES))}, got {family!r}")],
    )
