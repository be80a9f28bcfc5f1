"""``report.html``: one self-contained page (figures embedded as base64 PNG) per evaluation.

It shows the gates and the champion decision, a table of every metric per task, rollout error
against horizon, predictions against truth for each task and the loss curves of every stage.
"""

from __future__ import annotations

import base64
import csv
import io
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lightstack.core.io import atomic_write_text
from lightstack.physics.eval.gates import GateResult
from lightstack.physics.eval.leaderboard import Decision

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #176b2c; font-weight: bold; } .fail { color: #b00020; font-weight: bold; }
img { max-width: 100%; } .note { color: #666; }
td.what { text-align: left; color: #555; font-size: 0.85em; }
</style></head><body>
<h1>{{ title }}</h1>
<table>{% for key, value in info.items() %}<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}</table>
<h2>Gates</h2>
{% if gates %}<table><tr><th>gate</th><th>value</th><th>min</th><th>max</th><th>result</th></tr>
{% for g in gates %}<tr><td>{{ g.name }}</td><td>{{ fmt(g.value) }}</td><td>{{ fmt(g.min) }}</td>
<td>{{ fmt(g.max) }}</td><td class="{{ 'pass' if g.passed else 'fail' }}">
{{ 'passed' if g.passed else 'FAILED' }}</td></tr>{% endfor %}</table>
{% else %}<p class="note">no gates configured</p>{% endif %}
{% if decision %}<h2>Champion</h2>
<p class="{{ 'pass' if decision.promoted else 'note' }}">
{{ 'promoted to champion' if decision.promoted else 'not promoted' }}
{% if decision.champion %} (compared with run {{ decision.champion.run }},
{{ decision.champion.main_metric }} = {{ decision.champion.main_value }}){% endif %}</p>
<ul>{% for r in decision.reasons %}<li>{{ r }}</li>{% endfor %}</ul>{% endif %}
<h2>Metrics (test set, physical units)</h2>
<table><tr><th>metric</th>{% for t in tasks %}<th>{{ t }}</th>{% endfor %}<th>meaning</th></tr>
{% for m in metric_names %}<tr><td>{{ m }}</td>
{% for t in tasks %}<td>{{ fmt(results[t].get(m)) }}</td>{% endfor %}
<td class="what">{{ describe(m) }}</td></tr>{% endfor %}</table>
{% for heading, png in figures %}<h2>{{ heading }}</h2>
{% if png %}<img alt="{{ heading }}" src="data:image/png;base64,{{ png }}">
{% else %}<p class="note">nothing to plot</p>{% endif %}{% endfor %}
</body></html>
"""

HORIZON = re.compile(r"^rollout_nrmse@(\d+)$")
_PER_STEP = (
    "per sample, channel and predicted step over space, then the mean over steps, channels and "
    "samples (PDEBench)"
)
_BATCH = "over the whole test set as one batch, then the mean over steps and channels (PDEBench)"
# What each metric means and how it averages, by name pattern; first match wins.
DESCRIPTIONS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), d)
    for p, d in [
        (r"^persistence_", "the same metric for persistence (the last given snapshot kept)"),
        (r"^onestep_nrmse$", f"teacher-forced one-step nRMSE ||pred-true||/||true||, {_PER_STEP}"),
        (r"^rollout_nrmse$", f"autoregressive rollout nRMSE ||pred-true||/||true||, {_PER_STEP}"),
        (r"^rollout_nrmse@", "rollout nRMSE over the first h predicted steps only, as above"),
        (r"^(rmse|nrmse)$", f"RMSE (nrmse: divided by the truth's RMS), {_PER_STEP}"),
        (r"^max_error$", f"max |pred-true| over space and samples, {_BATCH}"),
        (r"^crmse$", f"RMSE of the spatial mean (conserved quantity), {_BATCH}"),
        (r"^brmse$", f"RMSE on the boundary points, {_PER_STEP}"),
        (
            r"^frmse_",
            f"RMSE of the spectrum in wavenumbers [0,4) low, [4,12) mid, 12+ high, {_BATCH}",
        ),
        (r"^scaled_l2$", "PDEArena's scaled L2: one ratio over space and time, mean over samples"),
        (
            r"^correlation_time@",
            "steps until the Pearson correlation with the truth falls below "
            "the threshold (0 for NaN), mean over samples",
        ),
        (r"mass_drift$", "relative change of the spatial mean from the given to the last step"),
        (r"^nonfinite_predictions$", "samples whose prediction holds NaN or Inf (must be 0)"),
        (r"^(trajectories|samples)$", "number of test samples scored"),
    ]
]


def describe(metric: str) -> str:
    """One line: what ``metric`` means and how it averages (see docs/physics.md)."""
    return next((d for p, d in DESCRIPTIONS if p.search(metric)), "")


LOSS_KEY = re.compile(r"^(train|val)/(loss|L_[A-Za-z0-9_]+?)(_epoch|_step)?$")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def horizon_figure(results: dict[str, dict[str, float]]) -> str | None:
    """nRMSE over the first ``h`` rollout steps against ``h``, model and persistence per task."""
    if len(results) == 2:  # one task: "all" would repeat it
        results = {k: v for k, v in results.items() if k != "all"}
    fig, ax = plt.subplots(figsize=(6, 3.5))
    plotted = False
    for color, (task, values) in enumerate(results.items()):
        points = sorted(
            (int(m.group(1)), v, values.get(f"persistence_{key}"))
            for key, v in values.items()
            if (m := HORIZON.match(key))
        )
        if not points:
            continue
        plotted = True
        steps, model, persistence = zip(*points, strict=True)
        ax.plot(steps, model, "o-", color=f"C{color}", label=f"{task}: surrogate")
        if all(p is not None for p in persistence):
            ax.plot(steps, persistence, "x--", color=f"C{color}", label=f"{task}: persistence")
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rollout horizon (steps)")
    ax.set_ylabel("nRMSE over the first h steps")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def read_step_log(csv_path: Path) -> list[dict[str, float]]:
    """Rows of Lightning's ``CSVLogger`` file (``<run>/logs/metrics.csv``), numbers only."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as fh:
        return [
            {k: float(v) for k, v in row.items() if k and v not in ("", None)}
            for row in csv.DictReader(fh)
        ]


def _series(rows: list[dict[str, Any]], x_key: str) -> dict[str, list[tuple[float, float]]]:
    """Loss terms and validation nRMSEs of ``rows`` against ``x_key`` (step or epoch); a
    per-step value (``_step``) is preferred to its epoch mean (``_epoch``)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    keys = {k for row in rows for k in row}
    for row in rows:
        if row.get(x_key) is None:
            continue
        for key, value in row.items():
            if value is None or (key.endswith("_epoch") and f"{key[:-6]}_step" in keys):
                continue
            name = key.removesuffix("_step").removesuffix("_epoch")
            if LOSS_KEY.match(key) or (key.startswith("val/") and key.endswith("nrmse")):
                series[name].append((row[x_key], value))
    return series


def loss_figure(
    histories: dict[str, list[dict[str, Any]]],
    step_logs: dict[str, list[dict[str, float]]] | None = None,
) -> str | None:
    """Loss terms (left) and validation nRMSE (right) of each stage, one row per stage: against
    the training step where the stage's step log has rows, else one point per epoch."""
    step_logs = step_logs or {}
    stages = {
        s: (step_logs[s], "step") if step_logs.get(s) else (rows, "epoch")
        for s, rows in {**histories, **step_logs}.items()
        if rows or step_logs.get(s)
    }
    if not stages:
        return None
    fig, axes = plt.subplots(len(stages), 2, figsize=(10, 3 * len(stages)), squeeze=False)
    for (stage, (rows, x_key)), (loss_ax, val_ax) in zip(stages.items(), axes, strict=True):
        for key, points in sorted(_series(rows, x_key).items()):
            ax = val_ax if key.endswith("nrmse") else loss_ax
            xs, values = zip(*points, strict=True)
            ax.plot(xs, values, "o-" if len(xs) < 20 else "-", label=key, markersize=3)
        for ax, label in ((loss_ax, "loss"), (val_ax, "validation nRMSE")):
            ax.set_title(f"{stage}: {label}", fontsize=9)
            ax.set_xlabel("training step" if x_key == "step" else "epoch")
            ax.set_ylabel(label)
            if ax.lines:
                ax.set_yscale("log")
                ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def write_report(
    path: str | Path,
    *,
    title: str,
    info: dict[str, str],
    results: dict[str, dict[str, float]],
    predictions_png: Path | None,
    histories: dict[str, list[dict[str, Any]]],
    gates: list[GateResult],
    decision: Decision | None,
    step_logs: dict[str, list[dict[str, float]]] | None = None,
) -> Path:
    """Render the report; every figure is embedded, so the file can be moved or mailed alone."""
    tasks = list(results)
    metric_names = list(dict.fromkeys(m for values in results.values() for m in values))
    figures = [("Rollout error against horizon", horizon_figure(results))]
    if predictions_png is not None:  # drawn once by plots.plot_predictions, embedded here
        png = base64.b64encode(Path(predictions_png).read_bytes()).decode()
        figures.append(("Truth, prediction and error of test trajectories", png))
    figures.append(("Training curves", loss_figure(histories, step_logs)))
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE).render(
        title=title,
        info=info,
        gates=gates,
        decision=decision,
        tasks=tasks,
        metric_names=metric_names,
        results=results,
        figures=figures,
        fmt=_fmt,
        describe=describe,
    )
    path = Path(path)
    atomic_write_text(path, html)
    return path
