"""Exact resume: a run killed with SIGKILL and re-run with the same command ends with weights
bit-identical to an uninterrupted run (CPU, deterministic), wherever it was killed."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from reliability_support import (
    STEPS_PER_EPOCH,
    Pending,
    assert_same_weights,
    final_weights,
    run_cli,
    start_cli,
)

from lightstack.core.checkpoints import CheckpointError, load_checkpoint
from lightstack.core.resume import ResumableSampler, verify_resume_checkpoint


def train_killed_at(
    config: Path,
    run_dir: Path,
    steps: list[int],
    *overrides: str,
    env: dict[str, str] | None = None,
) -> None:
    """Run the training command, SIGKILLed after each of ``steps``, then once more to finish.

    The command runs in ``run_dir``'s parent and names the run folder relatively, as users do.
    """
    command = ["physics", "train", "--config", config, "--run-dir", run_dir.name, *overrides]
    for step in steps:
        result = run_cli(
            *command, env={**(env or {}), "FAULT_KILL_AT_STEP": str(step)}, cwd=run_dir.parent
        )
        assert result.returncode == -9, result.output
        last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
        # checkpoint.every_n_train_steps=2: at most one step of work is lost
        assert step - 1 <= last["global_step"] <= step
    result = run_cli(*command, env=env, cwd=run_dir.parent)
    assert result.returncode == 0, result.output


def test_kill_mid_first_epoch_then_resume_is_bit_identical(reference, tiny_yaml, tmp_path):
    # Step 3 is mid-epoch before any validation: resumes from step 2 and redoes step 3.
    train_killed_at(tiny_yaml, tmp_path / "run", [3])
    assert_same_weights(final_weights(tmp_path / "run"), reference.weights())


def test_kills_at_epoch_end_and_mid_second_epoch_are_bit_identical(reference, tiny_yaml, tmp_path):
    train_killed_at(tiny_yaml, tmp_path / "run", [STEPS_PER_EPOCH, STEPS_PER_EPOCH + 5])
    assert_same_weights(final_weights(tmp_path / "run"), reference.weights())


@pytest.mark.slow
def test_ddp_kill_mid_epoch_then_resume_is_bit_identical(tiny_yaml, tmp_path):
    # 2 CPU processes (gloo): every rank's RNG and data position come back.
    ddp = ["trainer.devices=2", "trainer.strategy=ddp"]
    reference = start_cli(
        "physics", "train", "--config", tiny_yaml, "--run-dir", tmp_path / "ref", *ddp
    )
    train_killed_at(tiny_yaml, tmp_path / "run", [3], *ddp)
    states = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["callbacks"]
    assert len(states["RestoreRNG"]["per_rank"]) == 2
    Pending(reference, tmp_path / "ref").weights()
    assert_same_weights(final_weights(tmp_path / "run"), final_weights(tmp_path / "ref"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_bf16_kill_mid_epoch_then_resume_is_bit_identical(tiny_yaml, tmp_path):
    gpu = ["trainer.accelerator=gpu", "trainer.devices=1", "trainer.precision=bf16-mixed"]
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # deterministic cuBLAS
    command = ["physics", "train", "--config", tiny_yaml, "--run-dir", tmp_path / "ref", *gpu]
    assert run_cli(*command, env=env).returncode == 0
    train_killed_at(tiny_yaml, tmp_path / "run", [3, STEPS_PER_EPOCH + 5], *gpu, env=env)
    rng = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["callbacks"]
    assert "cuda" in rng["RestoreRNG"]["per_rank"][0]
    assert_same_weights(final_weights(tmp_path / "run"), final_weights(tmp_path / "ref"))


def test_sampler_resumes_with_the_remaining_indices_of_the_epoch():
    full = ResumableSampler(10, seed=7)
    full.set_epoch(2)
    order = list(full)
    resumed = ResumableSampler(10, seed=7)
    resumed.load_state_dict(full.state_dict(consumed=4))
    resumed.set_epoch(2)  # what Lightning does at the start of the resumed epoch
    assert list(resumed) == order[4:]
    assert list(resumed) == order  # the next pass over the epoch is whole again
    finished = ResumableSampler(10, seed=7)
    finished.load_state_dict(full.state_dict(consumed=10))
    assert finished.epoch == 3 and len(list(finished)) == 10
    other_epoch = ResumableSampler(10, seed=7)
    other_epoch.set_epoch(3)
    assert list(other_epoch) != order


def test_sampler_splits_an_epoch_between_processes_without_overlap():
    ranks = [ResumableSampler(10, seed=1, num_replicas=3, rank=r) for r in range(3)]
    parts = [list(s) for s in ranks]
    assert [len(p) for p in parts] == [4, 4, 4]  # padded to 12 like DistributedSampler
    assert set().union(*parts) == set(range(10))
    resumed = ResumableSampler(10, seed=1, num_replicas=3, rank=1)
    resumed.load_state_dict(ranks[1].state_dict(consumed=3))
    assert list(resumed) == parts[1][3:]


def test_sampler_position_for_another_data_set_is_not_applied():
    sampler = ResumableSampler(12, seed=7)
    with pytest.warns(UserWarning, match="another data set"):
        sampler.load_state_dict(ResumableSampler(10, seed=7).state_dict(consumed=4))
    assert len(list(sampler)) == 12


def test_item_seeds_make_item_randomness_independent_of_the_reader():
    from lightstack.core.resume import SeededItems

    class Noisy(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int) -> torch.Tensor:
            return torch.rand(2) + index

    sampler = ResumableSampler(6, seed=5, item_seeds=True)
    data = SeededItems(Noisy())
    keys = list(sampler)
    torch.manual_seed(0)
    first = [data[k] for k in keys]
    state = torch.get_rng_state()
    torch.manual_seed(123)  # another global stream (another worker, another resume point)
    again = [data[k] for k in reversed(keys)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    torch.manual_seed(0)
    [data[k] for k in keys]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's stream is left untouched


def test_resuming_from_a_checkpoint_of_another_stage_or_model_is_refused(tiny_config, tmp_path):
    from lightstack.physics import stages
    from lightstack.physics.train import train, with_data_shapes

    run = train(tiny_config("trainer.max_epochs=1"), tmp_path / "run")
    cfg = tiny_config("model.width=32")
    dm = stages.build_datamodule(cfg)
    wider = stages.build_stage(with_data_shapes(cfg, dm), dm)
    with pytest.raises(CheckpointError, match=r"last\.ckpt holds another architecture"):
        verify_resume_checkpoint(run.last_checkpoint, "physics", wider)
    with pytest.raises(CheckpointError, match=r"written by the 'physics' workload; expected"):
        verify_resume_checkpoint(run.last_checkpoint, "video", wider)


def _video_resumable() -> str | None:
    """Why the video resume test cannot run yet (None when it can)."""
    try:
        from lightstack.video.data.mvfoul import MVFoulDataModule
        from lightstack.video.train import train
    except ImportError as exc:
        return f"the video training entry point is not importable: {exc}"
    from lightstack.core.resume import ResumableDataModule

    if "resume" not in inspect.signature(train).parameters:
        return "lightstack.video.train.train takes no `resume` argument yet"
    if not issubclass(MVFoulDataModule, ResumableDataModule):
        return "MVFoulDataModule is not a ResumableDataModule (no exact mid-epoch position)"
    return None


VIDEO_YAML = """\
family: video
name: video-resume
seed: 1
data: {{root: {root}, frames: 4, start: 0, end: 4, fps: 25, size: [32, 32],
        views_per_sample_train: 2, max_views: 2, batch_size: 2}}
model: {{backbone: r3d_18, hidden: 16, dropout: 0.1}}
eval: {{after_fit: false}}
trainer: {{accelerator: cpu, devices: 1, max_epochs: 2, deterministic: true,
          limit_train_batches: 3, limit_val_batches: 1}}
optimizer: {{lr: 0.001, scheduler: {{name: none}}}}
checkpoint: {{every_n_train_steps: 1}}
logging: {{progress_bar: none, loggers: []}}
"""


@pytest.mark.slow
@pytest.mark.skipif(_video_resumable() is not None, reason=str(_video_resumable()))
def test_video_kill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    from lightstack.video.data.synthetic import synthesize

    synthesize(
        tmp_path / "tree", actions=16, views=(2, 2), frames=4, size=(32, 32),
        splits=("train", "valid"), fractions=(0.6, 0.4),
    )  # fmt: skip
    config = tmp_path / "video.yaml"
    config.write_text(VIDEO_YAML.format(root=tmp_path / "tree"))
    reference = start_cli("video", "train", "--config", config, "--run-dir", tmp_path / "ref")
    run = tmp_path / "run"
    for step in (2, 4):  # mid epoch 0, then mid epoch 1
        killed = run_cli(
            "video", "train", "--config", config, "--run-dir", run,
            env={"FAULT_KILL_AT_STEP": str(step)},
        )  # fmt: skip
        assert killed.returncode == -9, killed.output
    assert run_cli("video", "train", "--config", config, "--run-dir", run).returncode == 0
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output
    assert_same_weights(final_weights(run), final_weights(tmp_path / "ref"))


@pytest.mark.slow
def test_pipeline_killed_mid_stage_resumes_that_stage_bit_identically(
    reference, tiny_yaml, tmp_path
):
    command = ["physics", "pipeline", "--config", tiny_yaml, "--run-dir", "runs/p",
               "pipeline.stages=[operator]"]  # fmt: skip
    killed = run_cli(*command, env={"FAULT_KILL_AT_STEP": "7"}, cwd=tmp_path)
    assert killed.returncode == -9, killed.output
    stage_dir = tmp_path / "runs/p/stages/operator"
    assert load_checkpoint(stage_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    rerun = run_cli(*command, cwd=tmp_path)
    assert f"stage operator: resuming from {stage_dir.resolve()}" in " ".join(
        rerun.output.split()
    ), rerun.output
    state = json.loads((tmp_path / "runs/p/pipeline_state.json").read_text())
    assert "operator" in state["stages"], rerun.output
    assert_same_weights(final_weights(stage_dir), reference.weights())
