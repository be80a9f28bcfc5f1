"""Checkpoint conversion: Lightning <-> state_dict <-> safetensors, bit-exact, and loading back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lightstack.core.checkpoints import (
    META_KEY,
    CheckpointError,
    convert_checkpoint,
    load_checkpoint,
    make_metadata,
)
from lightstack.core.cli import ckpt_app


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor (equal bytes: NaNs and signed zeros included)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def assert_bit_exact(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert torch.equal(bits(a[key]), bits(b[key])), key


@pytest.fixture
def lightning_ckpt(toy, tmp_path) -> Path:
    """A real Lightning checkpoint (optimizer and loop state included) plus odd dtypes."""
    trainer, _ = toy.fit(toy.config("trainer.max_epochs=2"), tmp_path / "run")
    path = tmp_path / "run" / "trained.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    state = ckpt["state_dict"]
    state["extra.bf16"] = torch.randn(3, 2).to(torch.bfloat16)
    state["extra.count"] = torch.tensor(7, dtype=torch.int64)
    # odd but finite values: a NaN/Inf weight is refused by every loader (tests/reliability)
    state["extra.special"] = torch.tensor([-0.0, 1e-45, torch.finfo(torch.float32).max])
    state["extra.slice"] = torch.arange(10.0)[2:5]  # a view into a larger storage
    torch.save(ckpt, path)
    return path


def test_round_trips_are_bit_exact(lightning_ckpt, tmp_path):
    original = torch.load(lightning_ckpt, weights_only=True)
    assert "optimizer_states" in original and "loops" in original
    chain = [
        ("a.safetensors", "safetensors"),
        ("b.ckpt", "lightning"),
        ("c.pt", "state_dict"),
        ("d.safetensors", "safetensors"),
        ("e.ckpt", "lightning"),
    ]
    src = lightning_ckpt
    for name, fmt in chain:
        dst = convert_checkpoint(src, tmp_path / name)
        loaded = load_checkpoint(dst)
        assert_bit_exact(loaded["state_dict"], original["state_dict"])
        assert loaded[META_KEY] == original[META_KEY]
        assert (loaded["epoch"], loaded["global_step"]) == (original["epoch"], 8)
        assert "optimizer_states" not in loaded and "loops" not in loaded
        if fmt != "safetensors":
            raw = torch.load(dst, weights_only=True)
            assert ("pytorch-lightning_version" in raw) == (fmt == "lightning")
        src = dst
    again = convert_checkpoint(tmp_path / "e.ckpt", tmp_path / "f.safetensors")
    assert split_safetensors(again) == split_safetensors(tmp_path / "a.safetensors")


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    """(parsed JSON header, tensor bytes): the header's key order is not deterministic."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def test_every_format_loads_into_the_module(toy, lightning_ckpt, tmp_path):
    reference = toy.Module(toy.config())
    state = load_checkpoint(lightning_ckpt)["state_dict"]
    reference.load_state_dict(state, strict=False)
    for fmt in ("state_dict", "safetensors", "lightning"):
        path = convert_checkpoint(lightning_ckpt, tmp_path / f"out.{fmt}", fmt)
        module = toy.Module(toy.config())
        ckpt = load_checkpoint(path)
        assert set(ckpt) >= {"state_dict", META_KEY, "epoch", "global_step"}
        weights = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("extra.")}
        module.load_state_dict(weights, strict=True)
        x = torch.randn(3, 4)
        assert torch.equal(module.model(x), reference.model(x))


def test_tied_weights_are_written_once_each(tmp_path):
    linear = torch.nn.Linear(3, 3)
    state = {"a.weight": linear.weight.data, "b.weight": linear.weight.data}
    meta = make_metadata("toy", "toy", {}, linear)
    torch.save({"state_dict": state, META_KEY: meta}, tmp_path / "tied.pt")
    out = convert_checkpoint(tmp_path / "tied.pt", tmp_path / "tied.safetensors")
    loaded = load_checkpoint(out)["state_dict"]
    assert torch.equal(loaded["a.weight"], loaded["b.weight"])
    assert torch.equal(loaded["a.weight"], linear.weight.data)


def test_physics_surrogate_loads_from_every_format(burgers_file, tmp_path):
    from lightstack.core.config import to_dict
    from lightstack.physics.config import PhysicsConfig
    from lightstack.physics.data.windows import PDEDataModule
    from lightstack.physics.models.surrogate import LatentSurrogate
    from lightstack.physics.stages.predictors import load_surrogate
    from lightstack.physics.train import with_data_shapes

    cfg = PhysicsConfig.model_validate(
        {
            "data": {"train_files": [str(burgers_file)], "reduced_resolution": 4, "max_samples": 4},
            "model": {"width": 16, "heads": 2, "patch_size": 4, "operator_depth": 1},
        }
    )
    dm = PDEDataModule(cfg.data, horizon=1)
    cfg = with_data_shapes(cfg, dm)
    torch.manual_seed(0)
    model = LatentSurrogate(cfg.model)
    meta = make_metadata("physics", "operator", to_dict(cfg), model)
    meta["tasks"] = dm.task_names
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    original = tmp_path / "operator.ckpt"
    torch.save({"state_dict": state, META_KEY: meta, "epoch": 3}, original)

    u = torch.randn(2, 64, 1)
    grid = (torch.arange(64) / 64).view(1, 64, 1).expand(2, 64, 1)
    dt, params = torch.full((2,), 0.1), torch.zeros(2, 0)
    expected, _, _ = load_surrogate(original)
    with torch.no_grad():
        want = expected(u, grid, dt, params)
    for name in ("op.safetensors", "op.pt", "op2.ckpt"):
        surrogate, loaded_cfg, tasks = load_surrogate(convert_checkpoint(original, tmp_path / name))
        assert loaded_cfg == cfg and tasks == ["burgers"]
        with torch.no_grad():
            assert torch.equal(surrogate(u, grid, dt, params), want)


def test_video_model_loads_from_safetensors(tmp_path):
    from lightstack.core.config import to_dict
    from lightstack.video.config import VideoConfig
    from lightstack.video.inference import load_video_model
    from lightstack.video.models.multiview import MultiViewModel

    cfg = VideoConfig.model_validate(
        {"model": {"backbone": "s3d", "aggregation": "max", "hidden": 16}}
    )
    model = MultiViewModel(cfg.model).eval()
    meta = make_metadata("video", "train", to_dict(cfg), model)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, META_KEY: meta}, tmp_path / "video.ckpt")
    out = convert_checkpoint(tmp_path / "video.ckpt", tmp_path / "video.safetensors")
    loaded, _, loaded_meta = load_video_model(out)
    assert loaded_meta["family"] == "video"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_bad_inputs_are_refused_clearly(lightning_ckpt, tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a lightstack checkpoint"):
        convert_checkpoint(tmp_path / "foreign.ckpt", tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"cannot tell the format of .*out\.bin"):
        convert_checkpoint(lightning_ckpt, tmp_path / "out.bin")
    with pytest.raises(ValueError, match="same file"):
        convert_checkpoint(lightning_ckpt, lightning_ckpt, "lightning")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="no 'lightstack' entry in the safetensors"):
        load_checkpoint(tmp_path / "plain.safetensors")
    ckpt = torch.load(lightning_ckpt, weights_only=True)
    ckpt["state_dict"]["odd"] = [1, 2]
    torch.save(ckpt, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match="entry 'odd' is a list, not a tensor"):
        convert_checkpoint(tmp_path / "odd.ckpt", tmp_path / "odd.safetensors")


def test_cli_convert(lightning_ckpt, tmp_path):
    runner = CliRunner()
    out = tmp_path / "weights.bin"
    result = runner.invoke(
        ckpt_app, ["convert", str(lightning_ckpt), str(out), "--to", "safetensors"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output and "toy toy checkpoint" in result.output
    assert load_checkpoint(out)[META_KEY]["family"] == "toy"
    result = runner.invoke(ckpt_app, ["convert", str(lightning_ckpt), str(tmp_path / "x.bin")])
    assert result.exit_code == 1 and "cannot tell the format" in result.output
