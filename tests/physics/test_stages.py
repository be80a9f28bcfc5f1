"""The later physics stages: diffusion residual, consistency distillation, steady prior."""

import copy
import json
from pathlib import Path

import pytest
import torch

from lightstack.core.checkpoints import CheckpointError, architecture_fingerprint, load_checkpoint
from lightstack.physics.config import DiffusionConfig, PhysicsConfig, SurrogateConfig
from lightstack.physics.data.pdebench import PDEBenchError
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.data.windows import PDEDataModule
from lightstack.physics.models.consistency import ConsistencyResidual, distillation_levels
from lightstack.physics.models.diffusion import DiffusionResidual
from lightstack.physics.stages import STAGES, build_datamodule, build_stage
from lightstack.physics.stages.consistency_distill import consistency_target
from lightstack.physics.stages.correctors import compare_correctors, load_correctors
from lightstack.physics.stages.steady_prior import evaluate_steady, load_steady_prior
from lightstack.physics.train import train, with_data_shapes

SMALL = ("data.max_samples=16", "trainer.max_epochs=1", "trainer.limit_train_batches=4")
DENOISER = (
    "diffusion.width=32",
    "diffusion.depth=2",
    "diffusion.heads=2",
    "diffusion.stats_batches=2",
)


@pytest.fixture(scope="module")
def operator_ckpt(tmp_path_factory, tiny_config) -> Path:
    result = train(tiny_config(*SMALL), tmp_path_factory.mktemp("op") / "run")
    return result.best_checkpoint


@pytest.fixture(scope="module")
def diff_run(tmp_path_factory, tiny_config, operator_ckpt):
    cfg = tiny_config(*SMALL, *DENOISER, "stage=diff_residual", f"init_from={operator_ckpt}")
    return train(cfg, tmp_path_factory.mktemp("diff") / "run")


@pytest.fixture(scope="module")
def cd_run(tmp_path_factory, tiny_config, diff_run):
    init = f"init_from={diff_run.best_checkpoint}"
    cfg = tiny_config(*SMALL, *DENOISER, "stage=consistency_distill", init)
    return train(cfg, tmp_path_factory.mktemp("cd") / "run")


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


# The module's trained runs, by stage; the other stages train one batch in the test.
TRAINED = {
    "operator": "operator_ckpt",
    "diff_residual": "diff_run",
    "consistency_distill": "cd_run",
}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_registered_stage_trains_and_its_checkpoint_names_it(
    stage, tiny_config, request, tmp_path
):
    if stage == "fno":
        pytest.importorskip("neuralop", reason="the FNO baseline needs the [baselines] extra")
    if stage in TRAINED:
        found = request.getfixturevalue(TRAINED[stage])
        if isinstance(found, Path):  # operator_ckpt: <run>/checkpoints/best.ckpt
            ckpt_path, run_dir = found, found.parents[1]
        else:
            ckpt_path, run_dir = found.best_checkpoint, found.run_dir
    else:
        extra = {
            "steady_prior": ("data.reduced_resolution=1", "steady.depth=1"),
            "fno": ("fno.modes=8", "fno.width=8", "fno.layers=2"),
        }.get(stage, ())
        files = [request.getfixturevalue("darcy_file")] if stage == "steady_prior" else None
        cfg = tiny_config(f"stage={stage}", "trainer.limit_train_batches=1", *extra, files=files)
        result = train(cfg, tmp_path / "run")
        ckpt_path, run_dir = result.best_checkpoint, result.run_dir
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["lightstack"]["stage"] == stage
    assert PhysicsConfig.model_validate(ckpt["lightstack"]["config"]).stage == stage
    assert ckpt["global_step"] >= 1
    assert torch.isfinite(torch.tensor(history(run_dir)[-1]["train/loss"]))


# --- hand-off errors, all raised before any training ----------------------------------------
def _assert_not_trained(run_dir: Path) -> None:
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "history.json").exists()


def test_missing_checkpoint_is_refused_before_fit(tiny_config, tmp_path):
    cfg = tiny_config(*SMALL, "stage=diff_residual", f"init_from={tmp_path / 'nope.ckpt'}")
    with pytest.raises(CheckpointError, match="does not exist"):
        train(cfg, tmp_path / "run")
    _assert_not_trained(tmp_path / "run")
    with pytest.raises(CheckpointError, match="set init_from"):
        train(tiny_config(*SMALL, "stage=consistency_distill"), tmp_path / "run2")
    with pytest.raises(ValueError, match="remove it"):
        train(tiny_config(*SMALL, f"init_from={tmp_path}"), tmp_path / "run3")


def test_wrong_stage_is_refused_before_fit(tiny_config, tmp_path, operator_ckpt):
    cfg = tiny_config(*SMALL, "stage=consistency_distill", f"init_from={operator_ckpt}")
    with pytest.raises(CheckpointError, match=r"is a 'operator' checkpoint.*'diff_residual'"):
        train(cfg, tmp_path / "run")
    _assert_not_trained(tmp_path / "run")


def test_mismatched_architecture_is_refused_before_fit(tiny_config, tmp_path, operator_ckpt):
    cfg = tiny_config(*SMALL, "stage=diff_residual", f"init_from={operator_ckpt}", "model.width=48")
    with pytest.raises(CheckpointError, match=r"model\.width: checkpoint 32, config 48"):
        train(cfg, tmp_path / "run")
    cfg = tiny_config(
        *SMALL, "stage=diff_residual", f"init_from={operator_ckpt}", "data.reduced_resolution_t=5"
    )
    with pytest.raises(CheckpointError, match=r"data\.reduced_resolution_t: checkpoint 10"):
        train(cfg, tmp_path / "run2")
    _assert_not_trained(tmp_path / "run")


# --- trained stages ---------------------------------------------------------------------------
def test_diff_residual_checkpoint_and_metrics(diff_run):
    ckpt = load_checkpoint(diff_run.best_checkpoint)
    meta = ckpt["lightstack"]
    assert meta["family"] == "physics" and meta["stage"] == "diff_residual"
    cfg = PhysicsConfig.model_validate(meta["config"])
    assert cfg.stage == "diff_residual" and cfg.init_from is not None
    assert meta["fingerprint"] == architecture_fingerprint(
        DiffusionResidual(cfg.model, cfg.diffusion)
    )
    # The residual scale was measured, not left at its initial ones.
    scale = ckpt["state_dict"]["model.residual_std"]
    assert scale.shape == (32,) and not torch.allclose(scale, torch.ones(32))
    row = history(diff_run.run_dir)[-1]
    for key in ("train/loss", "val/nrmse", "val/rollout_nrmse", "val/operator_rollout_nrmse"):
        assert row[key] > 0


def test_frozen_operator_is_unchanged_by_diff_training(diff_run, operator_ckpt):
    before = load_checkpoint(operator_ckpt)["state_dict"]
    after = load_checkpoint(diff_run.best_checkpoint)["state_dict"]
    for key, value in before.items():
        assert torch.equal(after["model.surrogate." + key[len("model.") :]], value), key


def test_sampling_shape_and_correction(diff_run):
    teacher, student, _, tasks = load_correctors(diff_run.best_checkpoint)
    assert student is None and tasks == ["burgers"]
    torch.manual_seed(0)
    tokens, cond = torch.randn(3, 16, 64), torch.zeros(3, 1)
    for steps in (1, 2, 4):
        assert teacher.sample_residual(tokens, cond, steps).shape == (3, 16, 32)
    u = torch.randn(2, 64, 1)
    grid = (torch.arange(64) / 64).view(1, 64, 1).expand(2, 64, 1)
    dt, params = torch.full((2,), 0.1), torch.zeros(2, 0)
    with torch.no_grad():
        corrected = teacher(u, grid, dt, params, steps=4)
        operator = teacher.surrogate(u, grid, dt, params)
    assert corrected.shape == operator.shape == (2, 64, 1)
    assert (corrected - operator).abs().max() > 1e-6


def test_consistency_checkpoint_and_comparison(cd_run, tiny_config):
    meta = load_checkpoint(cd_run.best_checkpoint)["lightstack"]
    assert meta["stage"] == "consistency_distill" and meta["teacher_fingerprint"]
    teacher, student, cfg, _ = load_correctors(cd_run.best_checkpoint)
    assert isinstance(student, ConsistencyResidual)
    dm = PDEDataModule(cfg.data, horizon=1)
    loader = torch.utils.data.DataLoader(dm.windows("test", None), batch_size=2)
    report = compare_correctors(teacher, loader, student)
    assert set(report) == {"operator", "teacher_4", "student_1", "student_2"}
    for values in report.values():
        assert values["rollout_nrmse"] > 0 and values["onestep_nrmse"] > 0
        assert values["ms_per_step"] > 0 and values["trajectories"] == 2


# --- diffusion and consistency maths on a toy model -------------------------------------------
def toy_models() -> tuple[DiffusionResidual, ConsistencyResidual]:
    torch.manual_seed(0)
    model_cfg = SurrogateConfig(width=8, heads=2, patch_size=4, channels=1, spatial_shape=[8])
    diffusion_cfg = DiffusionConfig(width=8, heads=2, depth=1, train_timesteps=4)
    teacher = DiffusionResidual(model_cfg, diffusion_cfg)
    torch.nn.init.normal_(teacher.denoiser.out.weight, std=0.5)  # a non-trivial teacher
    student = ConsistencyResidual(model_cfg, diffusion_cfg, levels=None)
    student.load_state_dict(teacher.state_dict())
    return teacher.eval(), student.eval()


@pytest.mark.parametrize(
    ("schedule", "prediction", "sampler", "steps"),
    [("refiner", "v_prediction", "ddpm", 2), ("cosine", "epsilon", "ddim", 5)],
)
def test_other_schedules_and_samplers(schedule, prediction, sampler, steps):
    model_cfg = SurrogateConfig(width=8, heads=2, patch_size=4, channels=1, spatial_shape=[8])
    cfg = DiffusionConfig(
        width=8, heads=2, depth=1, schedule=schedule, prediction=prediction, sampler=sampler,
        train_timesteps=10 if schedule == "cosine" else 4, sample_steps=steps,
    )  # fmt: skip
    teacher = DiffusionResidual(model_cfg, cfg).eval()
    tokens, cond = torch.randn(2, 2, 16), torch.zeros(2, 1)
    x0 = torch.randn(2, 2, 8)
    assert teacher.denoising_loss(x0, tokens, cond) > 0
    with torch.no_grad():
        sample = teacher.sample_residual(tokens, cond, generator=torch.Generator().manual_seed(0))
    assert sample.shape == (2, 2, 8) and torch.isfinite(sample).all()


def test_diffusion_config_is_checked():
    with pytest.raises(ValueError, match="v_prediction"):
        DiffusionConfig(prediction="epsilon")
    with pytest.raises(ValueError, match="must divide train_timesteps"):
        DiffusionConfig(train_timesteps=4, sample_steps=3)


def test_ode_step_is_diffusers_ddim_step():
    from diffusers import DDIMScheduler

    teacher, _ = toy_models()
    x, tokens, cond = torch.randn(2, 2, 8), torch.randn(2, 2, 16), torch.zeros(2, 1)
    ddim = DDIMScheduler.from_config(teacher.scheduler.config)
    ddim.set_timesteps(4)
    with torch.no_grad():
        for t in (3, 2, 1, 0):
            ts = torch.full((2,), t)
            output = teacher.denoise(x, ts, tokens, cond)
            expected = ddim.step(output, t, x, eta=0.0).prev_sample
            got = teacher.ode_step(x, ts, ts - 1, tokens, cond)
            torch.testing.assert_close(got, expected)


def test_consistency_target_is_ema_student_at_teacher_ode_point():
    from diffusers import DDIMScheduler

    teacher, student = toy_models()
    ema = copy.deepcopy(student.denoiser)
    torch.nn.init.normal_(ema.out.weight, std=0.5)  # the EMA target differs from the student
    x0, tokens, cond = torch.randn(3, 2, 8), torch.randn(3, 2, 16), torch.zeros(3, 1)
    noise, n = torch.randn(3, 2, 8), torch.full((3,), 1)
    x_high, t_high, target = consistency_target(teacher, student, ema, x0, tokens, cond, n, noise)

    alpha_bar = teacher.scheduler.alphas_cumprod[2]
    torch.testing.assert_close(x_high, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)
    assert t_high.tolist() == [2, 2, 2]
    ddim = DDIMScheduler.from_config(teacher.scheduler.config)
    ddim.set_timesteps(4)
    with torch.no_grad():
        output = teacher.denoise(x_high, t_high, tokens, cond)
        x_low = ddim.step(output, 2, x_high, eta=0.0).prev_sample
        expected = student.consistency(x_low, torch.full((3,), 1), tokens, cond, net=ema)
        torch.testing.assert_close(target, expected)
        # A fresh student (a copy of the teacher) does not yet agree with the target.
        loss = (student.consistency(x_high, t_high, tokens, cond) - target).pow(2).mean()
    assert loss > 1e-4


def test_distillation_moves_the_one_step_student_towards_the_teacher():
    """Consistency distillation with ``consistency_target`` (student and EMA target starting as
    the teacher) brings the student's 1-step residual closer to the teacher's 4-step sample."""
    teacher, student = toy_models()
    ema = copy.deepcopy(student.denoiser)
    tokens, cond = torch.randn(64, 2, 16), torch.zeros(64, 1)

    def gap() -> float:
        with torch.no_grad():
            target = teacher.sample_residual(tokens, cond, 4, torch.Generator().manual_seed(1))
            one = student.sample_residual(tokens, cond, 1, torch.Generator().manual_seed(1))
        return float((one - target).pow(2).mean())

    before = gap()
    with torch.no_grad():  # clean residuals: the teacher's own samples
        x0 = teacher.sample_residual(tokens, cond, 4, torch.Generator().manual_seed(2))
    opt = torch.optim.Adam(student.denoiser.parameters(), lr=3e-3)
    for _ in range(60):
        x_high, t_high, target = consistency_target(teacher, student, ema, x0, tokens, cond)
        loss = (student.consistency(x_high, t_high, tokens, cond) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for averaged, param in zip(
                ema.parameters(), student.denoiser.parameters(), strict=True
            ):
                averaged.lerp_(param, 0.05)
    assert gap() < 0.6 * before, (gap(), before)


def test_consistency_function_boundary_and_top_level():
    teacher, student = toy_models()
    x, tokens, cond = torch.randn(2, 2, 8), torch.randn(2, 2, 16), torch.zeros(2, 1)
    with torch.no_grad():
        lowest = student.consistency(x, torch.zeros(2, dtype=torch.long), tokens, cond)
        torch.testing.assert_close(lowest, x / student.alphas_cumprod[0].sqrt())
        # At pure noise the student (initialised as the teacher) gives the teacher's estimate.
        top = torch.full((2,), 3)
        clean, _ = teacher.predict_clean(x, top, teacher.denoise(x, top, tokens, cond))
        torch.testing.assert_close(student.consistency(x, top, tokens, cond), clean)
    assert student.sample_levels(1) == [3] and student.sample_levels(2) == [3, 2]
    assert distillation_levels(10, 4).tolist() == [0, 3, 6, 9]


# --- steady prior ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def darcy_file(tmp_path_factory) -> Path:
    from lightstack.physics.data.generate import generate

    out = tmp_path_factory.mktemp("darcy") / "darcy.h5"
    return generate("darcy2d", out, samples=48, seed=0, nx=32)


def test_steady_prior_learns_darcy(tiny_config, darcy_file, tmp_path):
    cfg = tiny_config(
        "stage=steady_prior", "data.reduced_resolution=1", "trainer.max_epochs=5",
        "steady.depth=2", "steady.query_points=256", "optimizer.lr=3e-3", files=[darcy_file],
    )  # fmt: skip
    run = train(cfg, tmp_path / "run").run_dir
    nrmse = [row["val/nrmse"] for row in history(run)]
    assert len(nrmse) == 5 and nrmse[-1] < 0.8 * nrmse[0]
    model, saved, tasks = load_steady_prior(run / "checkpoints" / "best.ckpt")
    assert saved.stage == "steady_prior" and tasks == ["darcy"]
    dm = SteadyDataModule(saved.data)
    loader = torch.utils.data.DataLoader(dm.windows("test", None), batch_size=8)
    result = evaluate_steady(model, loader, tasks)
    assert result["all"]["samples"] == 5 and 0 < result["all"]["nrmse"] < nrmse[0]


def test_steady_data_needs_darcy_files(tiny_config, darcy_file):
    with pytest.raises(PDEBenchError, match="Darcy layout"):
        SteadyDataModule(tiny_config().data)
    cfg = tiny_config("stage=steady_prior", files=[darcy_file])
    dm = PDEDataModule(cfg.data, horizon=1)
    with pytest.raises(TypeError, match="build_datamodule"):
        build_stage(with_data_shapes(cfg, dm), dm)
    item = build_datamodule(cfg).windows("train", None)[0]
    assert item["coefficient"].shape == (8, 8, 1) and item["solution"].shape == (8, 8, 1)


def test_top_level_sees_zeros_and_gets_its_share_of_training():
    teacher, _ = toy_models()
    tokens, cond = torch.randn(2, 2, 16), torch.zeros(2, 1)
    x_a, x_b = torch.randn(2, 2, 8), torch.randn(2, 2, 8)
    top, below = torch.full((2,), 3), torch.full((2,), 2)
    with torch.no_grad():
        # beta 1 at the top: the network sees zeros there, whatever the noisy sample.
        at_top = teacher.denoise(x_a, top, tokens, cond)
        torch.testing.assert_close(at_top, teacher.denoise(x_b, top, tokens, cond))
        torch.testing.assert_close(
            at_top, teacher.denoiser(torch.zeros_like(x_a), top, tokens, cond)
        )
        torch.testing.assert_close(
            teacher.denoise(x_a, below, tokens, cond), teacher.denoiser(x_a, below, tokens, cond)
        )
        # One sampler step is the top level's deterministic estimate, whatever the noise.
        samples = [
            teacher.sample_residual(tokens, cond, 1, torch.Generator().manual_seed(seed))
            for seed in (0, 1)
        ]
        expected, _ = teacher.predict_clean(x_a, top, at_top)
    torch.testing.assert_close(samples[0], samples[1])
    torch.testing.assert_close(samples[0], expected)
    levels = teacher.training_levels(20_000, torch.device("cpu"))
    shares = torch.bincount(levels, minlength=4) / levels.numel()
    torch.testing.assert_close(
        shares, torch.tensor([1 / 6, 1 / 6, 1 / 6, 1 / 2]), atol=0.015, rtol=0
    )


@pytest.mark.slow
def test_diff_residual_lowers_the_rollout_error_of_its_operator(tiny_config, tmp_path):
    """What the stage is for: the operator plus its sampled residual rolls the validation
    trajectories out with less error than the operator alone."""
    common = ("data.max_samples=16", "optimizer.lr=3e-3")
    op_run = train(tiny_config(*common, "trainer.max_epochs=8"), tmp_path / "op")
    cfg = tiny_config(
        *common, *DENOISER, "trainer.max_epochs=8", "diffusion.sample_steps=1",
        "stage=diff_residual", f"init_from={op_run.best_checkpoint}",
    )  # fmt: skip
    rows = history(train(cfg, tmp_path / "diff").run_dir)
    operator, corrected = rows[-1]["val/operator_rollout_nrmse"], rows[-1]["val/rollout_nrmse"]
    assert corrected < 0.9 * operator, (corrected, operator)
