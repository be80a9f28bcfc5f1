"""Quality per compute: lightstack's operator vs neuraloperator's FNO on one fixed protocol.

The protocol (issue #9), fixed so numbers compare across runs:

- data: the built-in generator at PDEBench's settings (1024 cells, 201 snapshots, 512 samples;
  Burgers nu = 0.01 or advection beta = 0.1), reduced as PDEBench's baselines reduce 1D data
  (x by 4 -> 256 points, t by 5 -> 41 snapshots);
- split by sample index: the first 90% train, the last 10% test (written as two files, so the
  test part is a held-out file for ``physics eval``); no validation set, nothing is selected on
  the test part;
- one-step map ``u(t_k) -> u(t_k+1)``, each model trained through lightstack's trainer for
  exactly ``--seconds`` of wall clock (``trainer.max_time``; the cosine schedule is fitted into
  that budget); the weights at the end of the budget are evaluated;
- test metrics in physical space with lightstack's evaluation: one-step nRMSE, rollout nRMSE over
  steps 1..16 and 1..40 from t_0, correlation times, persistence beside.

Prints one JSON line per model and one with the ratio rollout16(operator) / rollout16(fno);
data generation and splitting times go to stderr.

    python benchmarks/quality_per_compute.py --equation burgers1d --seconds 180 --device cuda \
        --out runs/qpc-burgers [--data runs/qpc-burgers/data/burgers1d_n512_seed0.h5]

Dotted overrides after the options apply to both models (``data.loader.num_workers=8``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import h5py
import torch

from lightstack.core.checkpoints import load_checkpoint
from lightstack.core.config import load_config
from lightstack.core.run import default_run_dir
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.generate import generate
from lightstack.physics.data.pdebench import PDEBenchError, create_1d, inspect_file
from lightstack.physics.evaluate import evaluate_checkpoint, load_predictor
from lightstack.physics.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "physics"
PDE_PARAMS = {"burgers1d": {"nu": 0.01}, "advection1d": {"beta": 0.1}}
MODELS = ("operator", "fno")
REDUCTION = {"reduced_resolution": 4, "reduced_resolution_t": 5}
HORIZONS = [1, 16, 40]
TEST_FRACTION = 0.1
NX = 1024


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def max_time(seconds: int) -> str:
    """``trainer.max_time`` (DD:HH:MM:SS) of a budget in seconds."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


def generate_data(equation: str, samples: int, seed: int, out_dir: Path) -> Path:
    """The protocol's data set (reused when already generated into ``out_dir``)."""
    path = out_dir / f"{equation}_n{samples}_seed{seed}.h5"
    if path.is_file():
        log(f"reusing {path}")
        return path
    started = time.perf_counter()
    generate(equation, path, samples=samples, seed=seed, nx=NX, **PDE_PARAMS[equation])
    log(
        f"generated {samples} {equation} samples at {NX} cells in "
        f"{time.perf_counter() - started:.1f} s (CPU, numpy)"
    )
    return path


def split_file(source: Path, out_dir: Path, chunk: int = 64) -> tuple[Path, Path]:
    """Write the first 90% of ``source``'s samples and the last 10% as two PDEBench files."""
    info = inspect_file(source)
    if info.layout != "1d_tensor":
        raise PDEBenchError(source, "tensor", "a 1D single-field file", f"layout {info.layout}")
    n = info.n_samples
    n_test = max(1, round(n * TEST_FRACTION))
    if n - n_test < 1:
        raise PDEBenchError(source, "tensor", "at least 2 samples to split", f"{n}")
    started = time.perf_counter()
    parts = {
        out_dir / f"{source.stem}_train.h5": (0, n - n_test),
        out_dir / f"{source.stem}_test.h5": (n - n_test, n),
    }
    with h5py.File(source, "r") as f:
        tensor, x, t = f["tensor"], f["x-coordinate"][:], f["t-coordinate"][:]
        for path, (start, stop) in parts.items():
            with create_1d(path, stop - start, tensor.shape[1], x, t, info.attrs) as part:
                for lo in range(start, stop, chunk):
                    hi = min(lo + chunk, stop)
                    part[lo - start : hi - start] = tensor[lo:hi]
    log(
        f"split {source.name}: samples 0..{n - n_test - 1} train, {n - n_test}..{n - 1} test "
        f"in {time.perf_counter() - started:.1f} s"
    )
    train_file, test_file = parts
    return train_file, test_file


def protocol_config(
    config: Path, model: str, train_file: Path, test_file: Path, args: argparse.Namespace
) -> PhysicsConfig:
    """``config`` with what the protocol fixes: data, split, reduction, budget, evaluation."""
    cuda = args.device.startswith("cuda")
    fixed = {
        "name": f"qpc-{args.equation}-{model}",
        "stage": model,
        "data.train_files": [str(train_file)],
        "data.test_files": [str(test_file)],
        "data.val_fraction": 0,
        "data.test_fraction": 0,
        **{f"data.{k}": v for k, v in REDUCTION.items()},
        "trainer.accelerator": "gpu" if cuda else "cpu",
        "trainer.devices": 1,
        "trainer.max_time": max_time(args.seconds),
        # The clock ends training; the step budget only has to be longer than it.
        "trainer.max_epochs": 100_000,
        "trainer.max_steps": -1,
        "training.skip_lightning_val": True,
        "eval.horizons": HORIZONS,
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in fixed.items()] + list(args.overrides)
    return load_config(config, overrides, PhysicsConfig)


def real_parameters(model: torch.nn.Module) -> int:
    """Trainable real numbers (a complex weight counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def run_model(
    model: str, config: Path, train_file: Path, test_file: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train ``model`` for the budget, evaluate its final weights on the test file."""
    cfg = protocol_config(config, model, train_file, test_file, args)
    run_dir = default_run_dir(cfg.name, args.out / "runs")
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON lines only
        fit = train(cfg, run_dir, resume="never")
        if fit.last_checkpoint is None:
            raise RuntimeError(f"{model}: training wrote no last checkpoint in {run_dir}")
        summary = evaluate_checkpoint(
            fit.last_checkpoint,
            run_dir / "eval",
            data_files=[str(test_file)],
            device=args.device,
            publish=False,
        )
    ckpt = load_checkpoint(fit.last_checkpoint)
    predictor, _, _ = load_predictor(fit.last_checkpoint)
    metrics = summary["metrics"]["all"]
    keys = [
        "onestep_nrmse",
        *(f"rollout_nrmse@{h}" for h in HORIZONS[1:]),
        *(f"correlation_time@{c}" for c in cfg.eval.correlation_thresholds),
        "persistence_onestep_nrmse",
        *(f"persistence_rollout_nrmse@{h}" for h in HORIZONS[1:]),
    ]
    return {
        "benchmark": "quality_per_compute",
        "equation": args.equation,
        "model": model,
        "seconds": args.seconds,
        **{k: round(metrics[k], 5) for k in keys},
        "test_trajectories": metrics["trajectories"],
        "parameters": real_parameters(predictor),
        "steps": int(ckpt["global_step"]),
        "epochs": int(ckpt["epoch"]) + 1,  # the last one cut short by the clock
        "train_s": round(fit.metrics.get("time/train_s", float("nan")), 1),
        "eval_s": round(summary["eval_wall_s"], 1),
        "batch_size": cfg.data.loader.batch_size,
        "precision": cfg.trainer.precision,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "run_dir": str(run_dir),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--equation", choices=sorted(PDE_PARAMS), default="burgers1d")
    parser.add_argument("--seconds", type=int, default=180, help="training budget per model")
    parser.add_argument("--device", default="cuda", help="cuda or cpu (smoke runs)")
    parser.add_argument("--models", default="operator,fno", help="comma-separated: operator,fno")
    parser.add_argument("--data", type=Path, help="a generated full-resolution file to reuse")
    parser.add_argument("--samples", type=int, default=512, help="samples to generate")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--out", type=Path, default=Path("runs/quality_per_compute"))
    parser.add_argument("--operator-config", type=Path, default=CONFIGS / "qpc_operator.yaml")
    parser.add_argument("--fno-config", type=Path, default=CONFIGS / "qpc_fno.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for both models")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown or not args.models:
        parser.error(f"--models {','.join(args.models)}: choose from {','.join(MODELS)}")
    if args.seconds < 1:
        parser.error(f"--seconds must be >= 1, got {args.seconds}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs, for both models alike
    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    source = args.data or generate_data(args.equation, args.samples, args.seed, data_dir)
    train_file, test_file = split_file(Path(source), data_dir)
    configs = {"operator": args.operator_config, "fno": args.fno_config}
    results = {}
    for model in args.models:
        results[model] = run_model(model, configs[model], train_file, test_file, args)
        print(json.dumps(results[model]), flush=True)
    if set(MODELS) <= set(results):
        ratio = results["operator"]["rollout_nrmse@16"] / max(
            results["fno"]["rollout_nrmse@16"], 1e-12
        )
        print(
            json.dumps(
                {
                    "benchmark": "quality_per_compute",
                    "equation": args.equation,
                    "ratio": "rollout_nrmse@16 operator / fno",
                    "value": round(ratio, 4),
                    "target": 0.5,
                    "met": ratio <= 0.5,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
