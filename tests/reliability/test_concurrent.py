"""Two commands on one run folder: the second is refused with a message naming the folder and
the process holding it, before it writes anything; the first is unharmed. The lock of a
process that died is taken over."""

from __future__ import annotations

import json
import os
import time

import pytest
from reliability_support import SRC, assert_same_weights, final_weights, run_cli, start_cli

from lightstack.core.config import load_config
from lightstack.core.run import OWNER_NAME, RunDirInUse, claim_run_dir
from lightstack.video.config import VideoConfig
from lightstack.video.train import train as train_video


def test_claim_refuses_a_held_folder_and_names_the_holder(tmp_path):
    with claim_run_dir(tmp_path / "run", "x") as path:
        assert path == (tmp_path / "run").resolve()
        owner = json.loads((path / OWNER_NAME).read_text())
        assert owner["pid"] == os.getpid()
        with (
            pytest.raises(RunDirInUse, match=rf"run directory {path} is in use by process "),
            claim_run_dir(tmp_path / "run", "x"),
        ):
            pass
    assert not (path / OWNER_NAME).exists()
    with claim_run_dir(tmp_path / "run", "x"):  # given back: free again
        pass


def test_the_lock_of_a_dead_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".run.lock").write_text("")  # left behind by a killed run, with its owner file
    (run_dir / OWNER_NAME).write_text(json.dumps({"pid": 999999, "host": "h", "argv": ["x"]}))
    with claim_run_dir(run_dir, "x"):
        assert json.loads((run_dir / OWNER_NAME).read_text())["pid"] == os.getpid()


@pytest.mark.slow
def test_a_second_training_on_the_same_folder_is_refused(reference, tiny_yaml, tmp_path):
    marker = tmp_path / "paused"
    command = ["physics", "train", "--config", tiny_yaml, "--run-dir", "runs/x"]
    first = start_cli(
        *command, env={"FAULT_PAUSE_AT_STEP": "4", "FAULT_MARKER": str(marker)}, cwd=tmp_path
    )
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), first.communicate()[0]
        config = (tmp_path / "runs/x/config.yaml").read_text()
        second = run_cli(*command, "trainer.max_epochs=5", cwd=tmp_path)
        assert second.returncode == 1, second.output
        text = " ".join(second.output.split())
        run_dir = (tmp_path / "runs/x").resolve()
        assert f"run directory {run_dir} is in use by process {first.pid}" in text
        assert "physics train" in text and "Traceback" not in text
        assert (tmp_path / "runs/x/config.yaml").read_text() == config  # not rewritten
        marker.unlink()  # let the first run go on
        output, _ = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, output
    assert_same_weights(final_weights(tmp_path / "runs/x"), reference.weights())


def test_video_training_takes_the_same_lock(tmp_path):
    cfg = load_config(
        SRC.parent / "configs/video/quickstart.yaml", [f"data.root={tmp_path}"], VideoConfig
    )
    with claim_run_dir(tmp_path / "run", "x"), pytest.raises(RunDirInUse, match="is in use by"):
        train_video(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()
