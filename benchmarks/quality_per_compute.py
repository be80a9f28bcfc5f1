"""Quality per compute: lightstack's model vs neuraloperator's FNO on one fixed protocol.

The protocol (issue #9), fixed so numbers compare across runs, per problem (``--equation``):

- ``burgers1d`` (nu = 0.01) and ``advection1d`` (beta = 0.1): the built-in generator at
  PDEBench's settings (1024 cells, 201 snapshots, 512 samples), reduced as PDEBench's baselines
  reduce 1D data (x by 4 -> 256 points, t by 5 -> 41 snapshots); split by sample index, the
  first 90% train, the last 10% test (written as two files); operator vs FNO; horizons 16, 40;
- ``ns2d``: incompressible Navier-Stokes (vorticity, Vx, Vy) on 64 x 64, 21 snapshots, the
  FNO benchmark's forcing and viscosity 1e-3; 256 samples, 10% test generated with another seed;
  operator vs FNO; horizons 10, 20 (the whole trajectory);
- ``darcy2d``: PDEBench's Darcy flow (beta = 1) on 64 x 64, coefficient -> solution; 512
  samples, 10% test generated with another seed; ``steady_prior`` vs the FNO on the same map
  (``fno.steady``).

No validation set: nothing is selected on the test part. Each model is trained through
lightstack's trainer for exactly ``--seconds`` of wall clock (``trainer.max_time``; the cosine
schedule is fitted into that budget) and the weights at the end of the budget are evaluated in
physical space with lightstack's evaluation: time problems report one-step nRMSE, rollout nRMSE
at the horizons from t_0, correlation times and persistence beside; Darcy reports the
solution's nRMSE, RMSE and max error.

Prints one JSON line per model and one with the ratio (lightstack model / FNO) of the main
metric and its target; data generation and splitting times go to stderr.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import torch
from torch.utils.data import DataLoader

from lightstack.core.checkpoints import load_checkpoint
from lightstack.core.config import load_config
from lightstack.core.run import default_run_dir
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.generate import default_filename, generate
from lightstack.physics.data.pdebench import PDEBenchError, create_1d, inspect_file
from lightstack.physics.data.steady import SteadyDataModule
from lightstack.physics.evaluate import evaluate_checkpoint
from lightstack.physics.stages.fno_baseline import load_fno
from lightstack.physics.stages.predictors import load_predictor as load_rollout_predictor
from lightstack.physics.stages.steady_prior import evaluate_steady, load_steady_prior
from lightstack.physics.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "physics"
TEST_FRACTION = 0.1


@dataclass(frozen=True)
class Problem:
    """What the protocol fixes for one ``--equation``."""

    params: dict[str, float | int]  # generator parameters
    samples: int  # default --samples
    reduction: dict[str, int]
    horizons: list[int]  # rollout horizons reported (empty: a steady problem)
    model: str  # lightstack's stage compared with the FNO
    configs: tuple[str, str]  # default config files of the model and the FNO
    metric: str  # main metric of the ratio line
    target: float  # the ratio the issue asks for
    split_by_index: bool  # True: last 10% of one file; False: a test file of its own seed

    @property
    def steady(self) -> bool:
        return not self.horizons


ONE_D = {
    "samples": 512,
    "reduction": {"reduced_resolution": 4, "reduced_resolution_t": 5},
    "horizons": [1, 16, 40],
    "model": "operator",
    "configs": ("qpc_operator.yaml", "qpc_fno.yaml"),
    "metric": "rollout_nrmse@16",
    "target": 0.5,
    "split_by_index": True,
}
PROBLEMS: dict[str, Problem] = {
    "burgers1d": Problem(params={"nu": 0.01, "nx": 1024}, **ONE_D),
    "advection1d": Problem(params={"beta": 0.1, "nx": 1024}, **ONE_D),
    "ns2d": Problem(
        params={"nx": 64},
        samples=256,
        reduction={"reduced_resolution": 1, "reduced_resolution_t": 1},
        horizons=[1, 10, 20],
        model="operator",
        configs=("qpc_ns2d.yaml", "qpc_fno_2d.yaml"),
        metric="rollout_nrmse@20",
        target=1.0,
        split_by_index=False,
    ),
    "darcy2d": Problem(
        params={"nx": 64, "beta": 1.0},
        samples=512,
        reduction={"reduced_resolution": 1},
        horizons=[],
        model="steady_prior",
        configs=("qpc_darcy.yaml", "qpc_fno_darcy.yaml"),
        metric="nrmse",
        target=1.0,
        split_by_index=False,
    ),
}


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
    suffix = Path(default_filename(equation)).suffix  # ns2d writes PDEBench's seed groups
    path = out_dir / f"{equation}_n{samples}_seed{seed}{suffix}"
    if path.is_file():
        log(f"reusing {path}")
        return path
    params = PROBLEMS[equation].params
    started = time.perf_counter()
    generate(equation, path, samples=samples, seed=seed, **params)
    log(
        f"generated {samples} {equation} samples ({params}) in "
        f"{time.perf_counter() - started:.1f} s (CPU, numpy)"
    )
    return path


def train_test_files(args: argparse.Namespace, out_dir: Path) -> tuple[Path, Path]:
    """The protocol's training and test files (see the module docstring)."""
    problem = PROBLEMS[args.equation]
    if problem.split_by_index:
        source = args.data or generate_data(args.equation, args.samples, args.seed, out_dir)
        return split_file(Path(source), out_dir)
    if args.data:
        raise SystemExit(f"--data applies to the 1D problems; {args.equation} generates its own")
    n_test = max(1, round(args.samples * TEST_FRACTION))
    train_file = generate_data(args.equation, args.samples - n_test, args.seed, out_dir)
    return train_file, generate_data(args.equation, n_test, args.seed + 1, out_dir)


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
        out_dir / f"{source.stem}_train.hdf5": (0, n - n_test),
        out_dir / f"{source.stem}_test.hdf5": (n - n_test, n),
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
    problem = PROBLEMS[args.equation]
    fixed = {
        "name": f"qpc-{args.equation}-{model}",
        "stage": model,
        "data.train_files": [str(train_file)],
        "data.test_files": [str(test_file)],
        "data.val_fraction": 0,
        "data.test_fraction": 0,
        **{f"data.{k}": v for k, v in problem.reduction.items()},
        **({"fno.steady": True} if model == "fno" and problem.steady else {}),
        "trainer.accelerator": "gpu" if cuda else "cpu",
        "trainer.devices": 1,
        "trainer.max_time": max_time(args.seconds),
        # The clock ends training; the step budget only has to be longer than it.
        "trainer.max_epochs": 100_000,
        "trainer.max_steps": -1,
        "training.skip_lightning_val": True,
        **({"eval.horizons": problem.horizons} if problem.horizons else {}),
    }
    overrides = [f"{k}={json.dumps(v)}" for k, v in fixed.items()] + list(args.overrides)
    return load_config(config, overrides, PhysicsConfig)


def real_parameters(model: torch.nn.Module) -> int:
    """Trainable real numbers (a complex weight counts twice)."""
    return sum(p.numel() * (2 if p.is_complex() else 1) for p in model.parameters())


def time_metrics(
    checkpoint: Path,
    run_dir: Path,
    test_file: Path,
    cfg: PhysicsConfig,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Rollout metrics of a time-dependent model's final weights on the test file."""
    summary = evaluate_checkpoint(
        checkpoint, run_dir / "eval", data_files=[str(test_file)], device=args.device,
        publish=False,
    )  # fmt: skip
    metrics = summary["metrics"]["all"]
    horizons = PROBLEMS[args.equation].horizons[1:]
    keys = [
        "onestep_nrmse",
        "rollout_nrmse",  # every step after the data.initial_step inputs: PDEBench's nRMSE
        *(f"rollout_nrmse@{h}" for h in horizons),
        *(f"correlation_time@{c}" for c in cfg.eval.correlation_thresholds),
        "persistence_onestep_nrmse",
        *(f"persistence_rollout_nrmse@{h}" for h in horizons),
    ]
    # a horizon longer than the steps after the inputs has no value
    return {k: round(metrics[k], 5) for k in keys if k in metrics} | {
        "test_trajectories": metrics["trajectories"],
        "eval_s": round(summary["eval_wall_s"], 1),
    }


def steady_metrics(
    checkpoint: Path, cfg: PhysicsConfig, args: argparse.Namespace
) -> dict[str, Any]:
    """Solution metrics of a steady model's final weights on the test file."""
    started = time.perf_counter()
    model, _, tasks = load_predictor(checkpoint)
    test = SteadyDataModule(cfg.data).windows("test", None)
    loader = DataLoader(test, batch_size=cfg.eval.batch_size)
    metrics = evaluate_steady(model, loader, tasks, args.device)["all"]
    return {k: round(metrics[k], 5) for k in ("nrmse", "rmse", "max_error")} | {
        "test_samples": int(metrics["samples"]),
        "eval_s": round(time.perf_counter() - started, 1),
    }


def load_predictor(path: Path) -> tuple[torch.nn.Module, PhysicsConfig, list[str]]:
    """The plain model of a checkpoint of any stage this benchmark trains."""
    stage = load_checkpoint(path)["lightstack"]["stage"]
    if stage == "steady_prior":
        return load_steady_prior(path)
    if stage == "fno":
        return load_fno(path)
    return load_rollout_predictor(path)


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
        if PROBLEMS[args.equation].steady:
            metrics = steady_metrics(fit.last_checkpoint, cfg, args)
        else:
            metrics = time_metrics(fit.last_checkpoint, run_dir, test_file, cfg, args)
    ckpt = load_checkpoint(fit.last_checkpoint)
    predictor, _, _ = load_predictor(fit.last_checkpoint)
    return {
        "benchmark": "quality_per_compute",
        "equation": args.equation,
        "model": model,
        "seconds": args.seconds,
        **metrics,
        "parameters": real_parameters(predictor),
        "steps": int(ckpt["global_step"]),
        "epochs": int(ckpt["epoch"]) + 1,  # the last one cut short by the clock
        "train_s": round(fit.metrics.get("time/train_s", float("nan")), 1),
        "batch_size": cfg.data.loader.batch_size,
        "precision": cfg.trainer.precision,
        "compile": cfg.model.compile,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "run_dir": str(run_dir),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--equation", choices=sorted(PROBLEMS), default="burgers1d")
    parser.add_argument("--seconds", type=int, default=180, help="training budget per model")
    parser.add_argument("--device", default="cuda", help="cuda or cpu (smoke runs)")
    parser.add_argument(
        "--models", default="all", help="comma-separated: the problem's model and/or fno"
    )
    parser.add_argument("--data", type=Path, help="a generated full-resolution 1D file to reuse")
    parser.add_argument("--samples", type=int, help="samples to generate (default: per problem)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    parser.add_argument("--out", type=Path, default=Path("runs/quality_per_compute"))
    parser.add_argument(
        "--model-config",
        "--operator-config",
        type=Path,
        dest="model_config",
        help="config of lightstack's model (default: per problem)",
    )
    parser.add_argument("--fno-config", type=Path, help="config of the FNO (default: per problem)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides for both models")
    args = parser.parse_args(argv)  # fmt: skip
    problem = PROBLEMS[args.equation]
    models = (problem.model, "fno")
    args.samples = args.samples or problem.samples
    args.model_config = args.model_config or CONFIGS / problem.configs[0]
    args.fno_config = args.fno_config or CONFIGS / problem.configs[1]
    chosen = models if args.models == "all" else args.models.split(",")
    args.models = [m.strip() for m in chosen if m.strip()]
    unknown = sorted(set(args.models) - set(models))
    if unknown or not args.models:
        parser.error(f"--models {','.join(args.models)}: choose from {','.join(models)}")
    if args.seconds < 1:
        parser.error(f"--seconds must be >= 1, got {args.seconds}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    problem = PROBLEMS[args.equation]
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs, for both models alike
    data_dir = args.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    train_file, test_file = train_test_files(args, data_dir)
    configs = {problem.model: args.model_config, "fno": args.fno_config}
    results = {}
    for model in args.models:
        results[model] = run_model(model, configs[model], train_file, test_file, args)
        print(json.dumps(results[model]), flush=True)
    if {problem.model, "fno"} <= set(results):
        ratio = results[problem.model][problem.metric] / max(results["fno"][problem.metric], 1e-12)
        record = {
            "benchmark": "quality_per_compute",
            "equation": args.equation,
            "ratio": f"{problem.metric} {problem.model} / fno",
            "value": round(ratio, 4),
            "target": problem.target,
            "met": ratio <= problem.target,
        }
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
