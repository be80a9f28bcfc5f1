"""The families ``lightstack`` ships: one registration line each (see ``core/families.py``)."""

from lightstack.core.families import register_family

register_family(
    "physics",
    schema="lightstack.physics.config:PhysicsConfig",
    commands="lightstack.physics.cli:physics_app",
)
register_family(
    "video", schema="lightstack.video.config:VideoConfig", commands="lightstack.video.cli:video_app"
)
