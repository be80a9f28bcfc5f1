"""``model.compile`` reaches every physics stage through one path (``configure_model``).

``nn.Module.compile`` is replaced by a recorder, so the test sees what would be compiled without
compiling anything.
"""

from __future__ import annotations

import pytest
from torch import nn

from lightstack.physics.config import PhysicsConfig
from lightstack.physics.stages import STAGES, fno_baseline


class TinyFNO(nn.Module):
    """Stands in for neuraloperator's FNO (an optional dependency) with the same constructor."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: object):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.linear = nn.Linear(in_channels, out_channels)


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[nn.Module]:
    """Modules ``nn.Module.compile`` was called on (nothing is compiled)."""
    calls: list[nn.Module] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, *a, **k: calls.append(self))
    monkeypatch.setattr("lightstack.core.compile.compile_problem", lambda device: None)
    monkeypatch.setattr(fno_baseline, "fno_class", lambda: TinyFNO)
    return calls


def stage_config(stage: str, compile: bool) -> PhysicsConfig:
    return PhysicsConfig.model_validate(
        {
            "stage": stage,
            "model": {
                "width": 8,
                "heads": 2,
                "patch_size": 4,
                "operator_depth": 1,
                "channels": 1,
                "spatial_shape": [16],
                "compile": compile,
                "compile_mode": "reduce-overhead",
            },
            "diffusion": {"width": 8, "depth": 1, "heads": 2},
            "steady": {"depth": 1},
            "fno": {"modes": 4, "width": 4, "layers": 1},
        }
    )


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_compiles_its_trainable_network(compiled, name):
    stage = STAGES[name](stage_config(name, compile=True), ["task"])
    stage.configure_model()
    assert compiled, f"stage {name!r} ignored model.compile"
    trainable = {id(m) for m in stage.trainable_module().modules()}
    assert any(id(m) in trainable for m in compiled), f"{name}: trainable network not compiled"
    own = {id(m) for m in stage.modules()}
    assert all(id(m) in own for m in compiled)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_no_stage_compiles_when_switched_off(compiled, name):
    STAGES[name](stage_config(name, compile=False), ["task"]).configure_model()
    assert compiled == []


def test_mode_reaches_torch_compile(monkeypatch):
    modes: list[str] = []
    monkeypatch.setattr(nn.Module, "compile", lambda self, mode=None, **k: modes.append(mode))
    monkeypatch.setattr("lightstack.core.compile.compile_problem", lambda device: None)
    STAGES["operator"](stage_config("operator", compile=True), ["task"]).configure_model()
    assert modes and set(modes) == {"reduce-overhead"}
