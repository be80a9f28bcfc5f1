"""Pre-emption: SIGTERM or SLURM's SIGUSR1 saves ``last.ckpt`` at the next batch boundary, exits
with a message and the signal's status, and the same command resumes bit-identically."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from reliability_support import assert_same_weights, final_weights, run_cli, start_cli

from lightstack.core.callbacks.preemption import Preemption, _requeue_slurm_job
from lightstack.core.checkpoints import load_checkpoint


def signal_at_step(config: Path, run_dir: Path, step: int, signum: int) -> tuple[int, str]:
    """Start training, wait until it reaches ``step`` (it pauses there), send ``signum``.

    The command runs in ``run_dir``'s parent and names the run folder relatively.
    """
    marker = run_dir.parent / f"{run_dir.name}.paused"
    proc = start_cli(
        "physics", "train", "--config", config, "--run-dir", run_dir.name,
        env={"FAULT_PAUSE_AT_STEP": str(step), "FAULT_MARKER": str(marker)}, cwd=run_dir.parent,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[0]
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, output


def test_sigterm_saves_last_and_exits_then_resumes_bit_identically(reference, tiny_yaml, tmp_path):
    run_dir = tmp_path / "run"
    code, output = signal_at_step(tiny_yaml, run_dir, step=5, signum=signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, output
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "SIGTERM received: training stopped at global step 5 (epoch 0)" in output
    assert f"checkpoint saved to {last}" in output and "same --run-dir to resume" in output
    assert "Traceback" not in output
    assert load_checkpoint(last)["global_step"] == 5
    assert not (run_dir / "train_metrics.json").exists()  # the run did not finish
    resumed = run_cli(
        "physics", "train", "--config", tiny_yaml, "--run-dir", run_dir.name, cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.output
    assert_same_weights(final_weights(run_dir), reference.weights())


@pytest.mark.slow
def test_ctrl_c_saves_last_and_exits_130_then_resumes_bit_identically(
    reference, tiny_yaml, tmp_path
):
    run_dir = tmp_path / "run"
    code, output = signal_at_step(tiny_yaml, run_dir, step=7, signum=signal.SIGINT)
    assert code == 130, output
    last = run_dir / "checkpoints" / "last.ckpt"
    assert "Ctrl-C: stopping after this batch" in output
    # noted during step 7 after the stop check of that batch: stops after the next one
    assert "SIGINT received: training stopped at global step 8 (epoch 0)" in output
    assert f"checkpoint saved to {last}" in output and "Traceback" not in output
    assert load_checkpoint(last)["global_step"] == 8
    resumed = run_cli(
        "physics", "train", "--config", tiny_yaml, "--run-dir", run_dir.name, cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.output
    assert_same_weights(final_weights(run_dir), reference.weights())


def test_sigusr1_stops_at_the_next_batch_like_sigterm(tiny_yaml, tmp_path):
    run_dir = tmp_path / "run"
    code, output = signal_at_step(tiny_yaml, run_dir, step=3, signum=signal.SIGUSR1)
    assert code == 128 + signal.SIGUSR1, output
    assert "SIGUSR1 received: training stopped at global step 4" in output
    assert "requeued" not in output  # not under SLURM
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt"))  # Lightning's own SLURM handler stayed off


def test_slurm_job_is_requeued_with_scontrol(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    scontrol = tmp_path / "bin" / "scontrol"
    scontrol.parent.mkdir()
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}{os.environ['PATH']}")
    assert not _requeue_slurm_job()  # outside SLURM nothing is called
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert _requeue_slurm_job()
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert _requeue_slurm_job()
    assert calls.read_text().splitlines() == ["requeue 4242", "requeue 77_3"]


def test_signal_handlers_are_given_back_after_fit(tmp_path):
    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def previous(signum, frame):
        pass

    old = signal.signal(signal.SIGUSR1, previous)
    try:
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 2)))
        trainer = L.Trainer(
            max_steps=2,
            callbacks=[Preemption(tmp_path)],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
        )
        sigint = signal.getsignal(signal.SIGINT)
        trainer.fit(Tiny(), data)
        assert signal.getsignal(signal.SIGUSR1) is previous
        assert signal.getsignal(signal.SIGINT) is sigint
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_a_second_ctrl_c_stops_at_once(tmp_path, capsys):
    preemption = Preemption(tmp_path)
    preemption._note(signal.SIGINT, None)
    assert preemption.received == signal.SIGINT  # the first is only noted
    assert "stopping after this batch" in capsys.readouterr().err
    with pytest.raises(KeyboardInterrupt):
        preemption._note(signal.SIGINT, None)


def test_a_dataloader_worker_leaves_ctrl_c_to_the_main_process(tmp_path, capsys, monkeypatch):
    """Ctrl-C reaches the whole process group; a worker forked with the handler neither stops
    nor prints (the main process prints once and stops the run)."""
    preemption = Preemption(tmp_path)
    monkeypatch.setattr(os, "getpid", lambda: preemption._pid + 1)
    preemption._note(signal.SIGINT, None)
    preemption._note(signal.SIGINT, None)  # no KeyboardInterrupt either
    assert preemption.received is None and capsys.readouterr().err == ""
