import csv
import json
import math

import pytest

from lightstack.core.config import ConfigError, load_config
from lightstack.physics.config import ChampionConfig, GateSpec, PhysicsConfig
from lightstack.physics.eval.gates import check_gates, failed_gates, gate_metrics
from lightstack.physics.eval.leaderboard import COLUMNS, Leaderboard, decide


# --- gates -------------------------------------------------------------------------------------
def test_gates_pass_fail_and_report_value_and_threshold():
    metrics = {"val/nrmse": 0.04, "rollout_nrmse@16": 0.3, "correlation_time@0.9": 5.0}
    gates = {
        "val/nrmse": GateSpec(max=0.05),
        "rollout_nrmse@16": GateSpec(max=0.2),
        "correlation_time@0.9": GateSpec(min=8),
    }
    results = check_gates(gates, metrics)
    assert [r.passed for r in results] == [True, False, False]
    failed = failed_gates(results)
    assert [g.name for g in failed] == ["rollout_nrmse@16", "correlation_time@0.9"]
    assert failed[0].message == "gate rollout_nrmse@16: FAILED, value 0.3 (needs <= 0.2)"
    assert failed[1].message == "gate correlation_time@0.9: FAILED, value 5 (needs >= 8)"
    assert failed[0].to_dict()["max"] == 0.2 and failed[0].to_dict()["value"] == 0.3


def test_missing_or_nan_metric_fails_and_null_switches_a_gate_off():
    results = check_gates(
        {"val/nrmse": GateSpec(max=1), "typo": GateSpec(max=1), "off": None},
        {"val/nrmse": math.nan, "off": 99.0},
    )
    assert [(r.name, r.passed, r.value) for r in results] == [
        ("val/nrmse", False, None),
        ("typo", False, None),
    ]
    assert "metric not computed" in results[1].message


def test_gate_metrics_namespace():
    flat = gate_metrics(
        {"all": {"rollout_nrmse": 0.2}, "burgers": {"rollout_nrmse": 0.3}},
        {"val/nrmse": 0.1},
    )
    assert flat == {"val/nrmse": 0.1, "rollout_nrmse": 0.2, "burgers/rollout_nrmse": 0.3}


def test_gates_from_config_and_command_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "family: physics\ngates: {val/nrmse: {max: 0.05}, rollout_nrmse@16: {max: 0.2}}\n"
    )
    cfg = load_config(path, ["gates={val/nrmse: {max: 0.01}}"], PhysicsConfig)
    assert cfg.gates["val/nrmse"].max == 0.01
    assert cfg.gates["rollout_nrmse@16"].max == 0.2
    cfg = load_config(path, ["gates.rollout_nrmse@16=null"], PhysicsConfig)
    assert cfg.gates["rollout_nrmse@16"] is None
    with pytest.raises(ConfigError, match=r"gates\.x: .*needs 'min', 'max'"):
        load_config(path, ["gates={x: {}}"], PhysicsConfig)
    with pytest.raises(ConfigError, match="larger than its max"):
        load_config(path, ["gates={x: {min: 2, max: 1}}"], PhysicsConfig)


# --- champion rule -----------------------------------------------------------------------------
CHAMP = ChampionConfig(metric="rollout_nrmse", margin=0.1, max_ratios={"mass_drift": 2.0})


def champion_row(**metrics):
    return {
        "run": "old",
        "main_value": str(metrics["rollout_nrmse"]),
        "metrics": json.dumps(metrics),
    }


def test_first_run_becomes_champion_only_if_gates_pass():
    assert decide({"rollout_nrmse": 0.5}, None, CHAMP, gates_passed=True).promoted
    refused = decide({"rollout_nrmse": 0.5}, None, CHAMP, gates_passed=False)
    assert not refused.promoted and refused.reasons == ["gates failed"]


@pytest.mark.parametrize(
    ("rollout", "drift", "promoted"),
    [
        (0.80, 0.01, True),  # 20 % better, drift within 2x
        (0.95, 0.01, False),  # only 5 % better: inside the 10 % margin
        (0.80, 0.03, False),  # better, but drift 3x the champion's
    ],
)
def test_margin_and_secondary_ratios(rollout, drift, promoted):
    champion = champion_row(rollout_nrmse=1.0, mass_drift=0.01)
    decision = decide({"rollout_nrmse": rollout, "mass_drift": drift}, champion, CHAMP, True)
    assert decision.promoted is promoted
    assert decision.champion["run"] == "old"
    assert "metrics" not in decision.to_dict()["champion"]


def test_max_mode_and_missing_secondary_is_not_compared():
    cfg = ChampionConfig(metric="correlation_time@0.9", mode="max", margin=0.1)
    champion = champion_row(rollout_nrmse=1.0, **{"correlation_time@0.9": 10.0})
    decision = decide({"correlation_time@0.9": 12.0}, champion, cfg, True)
    assert decision.promoted
    assert any("mass_drift not compared" in r for r in decision.reasons)
    assert not decide({"correlation_time@0.9": 10.5}, champion, cfg, True).promoted


# --- leaderboard -------------------------------------------------------------------------------
def entry(name, tasks="burgers"):
    return {
        "run": name,
        "run_dir": f"/runs/{name}",
        "checkpoint": f"/runs/{name}/best.ckpt",
        "stage": "operator",
        "task_set": tasks,
    }


def test_leaderboard_appends_rows_and_moves_the_champion_mark(tmp_path):
    board = Leaderboard(tmp_path / "leaderboard.csv")
    cfg = ChampionConfig(margin=0.1, max_ratios={})
    assert board.submit(entry("a"), {"rollout_nrmse": 1.0, "trajectories": 4}, cfg, True).promoted
    assert board.submit(entry("x", "advection"), {"rollout_nrmse": 2.0}, cfg, True).promoted
    assert not board.submit(entry("b"), {"rollout_nrmse": 0.95}, cfg, True).promoted
    assert not board.submit(entry("c"), {"rollout_nrmse": 0.1}, cfg, False).promoted
    decision = board.submit(entry("d"), {"rollout_nrmse": 0.5}, cfg, True)
    assert decision.promoted and decision.champion["run"] == "a"

    with open(tmp_path / "leaderboard.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS
        rows = list(reader)
    assert [r["run"] for r in rows] == ["a", "x", "b", "c", "d"]
    assert [r["champion"] for r in rows] == ["false", "true", "false", "false", "true"]
    assert [r["promoted"] for r in rows] == ["true", "true", "false", "false", "true"]
    assert rows[0]["trajectories"] == "4" and rows[3]["gates_passed"] == "false"
    assert json.loads(rows[4]["metrics"]) == {"rollout_nrmse": 0.5}
    assert board.champion("burgers")["run"] == "d"
    assert board.champion("advection")["run"] == "x"


def test_reevaluated_model_replaces_its_row(tmp_path):
    board = Leaderboard(tmp_path / "leaderboard.csv")
    cfg = ChampionConfig(max_ratios={})
    board.submit(entry("a"), {"rollout_nrmse": 1.0}, cfg, True)
    assert board.submit(entry("a"), {"rollout_nrmse": 1.0}, cfg, True).promoted
    rows = board.rows()
    assert len(rows) == 1 and rows[0]["champion"] == "true"


def test_leaderboard_with_foreign_columns_is_refused(tmp_path):
    path = tmp_path / "leaderboard.csv"
    path.write_text("run,score\na,1\n")
    with pytest.raises(ValueError, match=r"leaderboard .* has columns \['run', 'score'\]"):
        Leaderboard(path).rows()
