"""``physics inspect``: what a PDEBench file holds and whether lightstack can load it."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from lightstack.physics.data.pdebench import (
    CORRUPT_FILE_ERRORS,
    PDEBenchError,
    inspect_file,
    non_finite_attrs,
)

_BLOCK_BYTES = 64 * 2**20


def value_range(ds: h5py.Dataset) -> tuple[float, float, int]:
    """Min, max (over finite values) and the count of NaN/Inf, read in blocks along axis 0."""
    if ds.shape == () or ds.size == 0:
        values = np.asarray(ds[()], dtype=np.float64).ravel()
        blocks = [values]
    else:
        per_row = max(1, math.prod(ds.shape[1:]) * ds.dtype.itemsize)
        step = max(1, _BLOCK_BYTES // per_row)
        blocks = (
            np.asarray(ds[i : i + step], dtype=np.float64).ravel()
            for i in range(0, ds.shape[0], step)
        )
    lo, hi, bad = math.inf, -math.inf, 0
    for block in blocks:
        finite = np.isfinite(block)
        bad += int(block.size - finite.sum())
        if finite.any():
            lo, hi = min(lo, float(block[finite].min())), max(hi, float(block[finite].max()))
    return lo, hi, bad


def describe(path: str | Path) -> str:
    """A readable report; raises ``PDEBenchError`` (after listing) if the file would not load."""
    path = Path(path)
    info = inspect_file(path)  # raises for structural problems before any reading
    lines = [
        f"file: {path}",
        f"layout: {info.layout}",
        f"samples: {info.n_samples}  time steps: {info.n_times}  grid: {info.spatial_shape}",
        f"channels: {', '.join(info.channels)}",
        f"attributes: {info.attrs}" if info.attrs else "attributes: none",
        "datasets:",
    ]
    problems = [
        PDEBenchError(
            path, f"attrs/{key}", "a finite number (data.param_keys feeds it to the model)", value
        )
        for key, value in non_finite_attrs(info.attrs).items()
    ]
    with h5py.File(path, "r") as f:
        names: list[str] = []
        f.visititems(
            lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None
        )
        for name in names:
            ds = f[name]
            if not np.issubdtype(ds.dtype, np.number):
                lines.append(f"  {name}: shape {ds.shape} dtype {ds.dtype}")
                continue
            try:
                lo, hi, bad = value_range(ds)
            except CORRUPT_FILE_ERRORS as exc:
                lines.append(f"  {name}: shape {ds.shape} dtype {ds.dtype} (damaged)")
                problems.append(PDEBenchError(path, name, "readable data", f"damaged ({exc})"))
                continue
            lines.append(f"  {name}: shape {ds.shape} dtype {ds.dtype} range [{lo:.4g}, {hi:.4g}]")
            if bad:
                problems.append(PDEBenchError(path, name, "finite values", f"{bad} NaN/Inf values"))
    lines.append("problems: " + ("none" if not problems else "; ".join(str(p) for p in problems)))
    report = "\n".join(lines)
    if problems:
        first = problems[0]
        raise PDEBenchError(path, first.key, first.expected, f"{first.found}\n{report}")
    return report
