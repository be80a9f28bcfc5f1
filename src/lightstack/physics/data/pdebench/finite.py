"""``check_finite``: scan a file's data for NaN/Inf, one block of samples at a time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lightstack.physics.data.pdebench.errors import CORRUPT_FILE_ERRORS, PDEBenchError, open_h5
from lightstack.physics.data.pdebench.info import GROUP, PDEFileInfo
from lightstack.physics.data.pdebench.layouts import inspect_file

# Samples are scanned for NaN/Inf in blocks of about this many bytes.
_SCAN_BYTES = 64 * 2**20


def data_keys(info: PDEFileInfo) -> list[str]:
    """The keys of the datasets that hold samples (channels first, then e.g. Darcy's ``nu``)."""
    keys = []
    for source in info.sources:
        if GROUP in source.key:
            keys += [source.key_for(info.groups, i) for i in range(len(info.groups))]
        else:
            keys.append(source.key)
    return keys + list(info.aux_keys)


def check_finite(path: str | Path, key: str | None = None, max_samples: int | None = None) -> None:
    """Scan the data for NaN/Inf, one block of samples at a time.

    ``key`` restricts the scan to one dataset (e.g. ``"tensor"``, ``"Vx"``, ``"0003/data"``);
    ``max_samples`` to the first samples. Raises :class:`PDEBenchError` naming the key and the
    first bad sample.
    """
    path = Path(path)
    info = inspect_file(path)
    limit = info.n_samples if max_samples is None else min(max_samples, info.n_samples)
    keys = data_keys(info)
    if key is not None:
        if key not in keys:
            raise PDEBenchError(path, key, f"one of {keys}", "missing")
        keys = [key]
    shared = {s.key for s in info.sources if not s.sample_axis and GROUP not in s.key}
    per_group = {f"{g}/data": i for i, g in enumerate(info.groups)}
    with open_h5(path) as f:
        for name in keys:
            if name in per_group:
                sample = per_group[name]
                if sample < limit and not np.isfinite(f[name][()]).all():
                    raise PDEBenchError(path, name, "finite values", f"NaN/Inf in sample {sample}")
            elif name in shared:
                if not np.isfinite(f[name][()]).all():
                    raise PDEBenchError(
                        path, name, "finite values", "NaN/Inf (shared by all samples)"
                    )
            else:
                _scan(path, name, f[name], limit)


def non_finite_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric file attributes (PDE parameters such as ``Nu``) holding NaN/Inf."""
    bad = {}
    for key, value in attrs.items():
        arr = np.asarray(value)
        if np.issubdtype(arr.dtype, np.number) and not np.isfinite(arr).all():
            bad[key] = value
    return bad


def _scan(path: Path, key: str, ds: h5py.Dataset, limit: int) -> None:
    per_sample = max(1, math.prod(ds.shape[1:]) * ds.dtype.itemsize)
    block = max(1, _SCAN_BYTES // per_sample)
    for start in range(0, limit, block):
        stop = min(start + block, limit)
        try:
            values = ds[start:stop]
        except CORRUPT_FILE_ERRORS as exc:
            found = f"damaged data in samples {start}..{stop - 1} ({exc})"
            raise PDEBenchError(path, key, "readable data", found) from exc
        finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if not finite.all():
            sample = start + int(np.argmin(finite))
            raise PDEBenchError(path, key, "finite values", f"NaN/Inf in sample {sample}")
