"""Quickstart ablations: the quickstart with one change per variant, each trained for the
quickstart's fixed epochs on the same generated data; one JSON line per variant.

Each variant is ``lightstack quickstart`` with dotted overrides (the shipped recipe is
``quickstart``), so every row is reproducible with the command line alone. The work is fixed
(epochs, one thread), so the numbers do not depend on the machine or on variants running side
by side (``--variants`` per process); only the wall time does.

    python benchmarks/ablations.py --out ablations                     # all variants, ~3 min each
    python benchmarks/ablations.py --out abl --variants quickstart adamw --set generate.samples=16 \
        --set trainer.max_epochs=1                                     # a quick check
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from rich.console import Console

from bench_common import emit
from lightstack.core.checkpoints import load_checkpoint
from lightstack.core.config import load_config
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.generate import default_filename, generate
from lightstack.physics.quickstart import run_quickstart

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "physics" / "quickstart.yaml"

# One change each against the shipped quickstart (latent loss, 2-step rollouts, Muon, batch 16).
VARIANTS: dict[str, list[str]] = {
    "quickstart": [],
    "adamw": ["optimizer.name=adamw"],
    "no_latent_loss": ["loss.latent=0"],
    "rollout_4_steps": ["loss.rollout_horizon=4"],
    "batch_32": ["data.loader.batch_size=32"],
    "query_points_128": ["loss.query_points=128"],
}


def shared_data(out: Path, overrides: list[str]) -> Path:
    """The quickstart's data set, generated once for every variant."""
    gen = load_config(CONFIG, overrides, PhysicsConfig).generate
    assert gen is not None, f"{CONFIG} has no generate section"
    path = out / "data" / default_filename(gen.equation)
    if not path.exists():
        generate(gen.equation, path, samples=gen.samples, seed=gen.seed, **gen.params)
    return path


def run_variant(name: str, overrides: list[str], data: Path, out: Path) -> dict:
    run_dir = out / name
    (run_dir / "data").mkdir(parents=True, exist_ok=True)
    if not (run_dir / "data" / data.name).exists():
        shutil.copy(data, run_dir / "data" / data.name)  # run_quickstart then skips generating
    # stdout carries only the JSON lines: no progress bar, the quickstart's table to stderr
    summary = run_quickstart(
        CONFIG, ["logging.progress_bar=none", *overrides], run_dir, Console(file=sys.stderr)
    )
    steps = load_checkpoint(summary["checkpoint"])["global_step"]
    return {
        "variant": name,
        "overrides": overrides,
        "onestep_ratio_to_persistence": summary["improvement_over_persistence"],
        "test_onestep_nrmse": summary["test_onestep_nrmse"],
        "test_rollout_nrmse": summary["test_rollout_nrmse"],
        "persistence_rollout_nrmse": summary["persistence_rollout_nrmse"],
        "steps": steps,
        "wall_time_s": round(summary["wall_time_s"], 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs")
    parser.add_argument(
        "--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS), metavar="NAME"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override applied to every variant (e.g. trainer.max_epochs=2)",
    )  # fmt: skip
    parser.add_argument(
        "--data-only", action="store_true", help="generate the shared data set and stop"
    )
    args = parser.parse_args(argv)
    data = shared_data(args.out, args.set)
    if args.data_only:
        return
    for name in args.variants:
        emit(run_variant(name, [*args.set, *VARIANTS[name]], data, args.out))


if __name__ == "__main__":
    main()
