"""On-disk cache of encoded latent trajectories, so later stages train without the encoder.

Every trajectory of the cached splits is encoded once, snapshot by snapshot, into latent tokens
``(T, N, W)`` and stored as one ``.npy`` array per (split, data file), read back memory-mapped.
The cache lives in ``<root>/<key>/``; the key hashes everything that changes the latents: the
identity of every data file (resolved path, size, modification time), the data fields that
select and reduce samples, the cached splits and dtype, and a hash of the encoder's weights and
normalisation statistics. Change any of them and a new entry is built; change anything else
(batch size, epochs, learning rate) and the entry is reused. An entry is built in a temporary
folder and renamed into place when complete, so a killed build is never read.
``latent_datamodule.LatentCacheDataModule`` serves an entry's windows as training batches.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lightstack.core.io import atomic_write_json
from lightstack.physics.config import LatentCacheConfig, PhysicsDataConfig
from lightstack.physics.data.windows import PDEDataModule, TrajectoryWindows
from lightstack.physics.models.surrogate import LatentSurrogate

CACHE_VERSION = 1
META = "meta.json"
LATENT_DATA_FIELDS = (
    "train_files",
    "val_files",
    "test_files",
    "task_names",
    "reduced_resolution",
    "reduced_resolution_t",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "split",
    "max_samples",
    "param_keys",
)


def file_identity(path: str | Path) -> dict[str, Any]:
    """What identifies a data file without reading it: resolved path, size, mtime (ns)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def encoder_fingerprint(model: LatentSurrogate) -> str:
    """sha256 of the encoder's weights and the normalisation buffers (names, dtypes, bytes)."""
    digest = hashlib.sha256()
    tensors = [(f"encoder.{k}", v) for k, v in model.encoder.state_dict().items()]
    tensors += [("mean", model.mean), ("std", model.std)]
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(
    data: PhysicsDataConfig, model: LatentSurrogate, splits: list[str], dtype: str
) -> tuple[str, dict[str, Any]]:
    """The entry's key and the description it hashes (kept in ``meta.json`` for inspection)."""
    files = sorted({*data.train_files, *data.val_files, *data.test_files})
    description = {
        "version": CACHE_VERSION,
        "files": [file_identity(f) for f in files],
        "data": {name: getattr(data, name) for name in LATENT_DATA_FIELDS},
        "splits": list(splits),
        "dtype": dtype,
        "encoder": encoder_fingerprint(model),
    }
    blob = json.dumps(description, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24], description


class LatentWindows(Dataset):
    """Windows of ``horizon + 1`` consecutive latent snapshots of one cached array.

    Items mirror ``TrajectoryWindows`` with ``latents`` (horizon + 1, N, W) in place of
    ``fields``; ``horizon=None`` gives whole trajectories. The array is opened (memory-mapped)
    on first access in each worker process, so nothing large is pickled.
    """

    def __init__(
        self,
        path: Path,
        horizon: int | None,
        dt: float,
        params: list[float],
        task_id: int,
    ):
        self.path = Path(path)
        self.horizon = horizon
        self.dt = torch.tensor(dt, dtype=torch.float32)
        self.params = torch.tensor(params, dtype=torch.float32)
        self.task_id = task_id
        self._array: np.ndarray | None = None
        n, t = self.array.shape[:2]
        if horizon is not None and t < horizon + 1:
            raise ValueError(f"{self.path}: {t} latent snapshots, horizon {horizon} needs more")
        self.n_trajectories = n
        self.starts = 1 if horizon is None else t - horizon

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_array": None}

    def __len__(self) -> int:
        return self.n_trajectories * self.starts

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample, start = divmod(index, self.starts)
        stop = None if self.horizon is None else start + self.horizon + 1
        latents = np.array(self.array[sample, start:stop], dtype=np.float32)  # a copy
        return {
            "latents": torch.from_numpy(latents),
            "params": self.params,
            "dt": self.dt,
            "task": torch.tensor(self.task_id),
        }


@dataclass(frozen=True)
class LatentCache:
    """A complete cache entry: ``windows(split, horizon)`` serves its latents."""

    path: Path
    meta: dict[str, Any]
    built: bool

    @property
    def key(self) -> str:
        return self.path.name

    def windows(self, split: str, horizon: int | None) -> ConcatDataset:
        entries = [e for e in self.meta["arrays"] if e["split"] == split]
        if not entries:
            raise ValueError(
                f"latent cache {self.path} holds splits {self.meta['description']['splits']}, "
                f"not {split!r}"
            )
        return ConcatDataset(
            [
                LatentWindows(self.path / e["file"], horizon, e["dt"], e["params"], e["task_id"])
                for e in entries
            ]
        )


def _complete(path: Path, key: str) -> dict[str, Any] | None:
    """The entry's metadata if ``path`` holds a complete entry for ``key``, else ``None``."""
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    if meta.get("key") != key:
        return None
    for entry in meta.get("arrays", []):
        try:
            array = np.load(path / entry["file"], mmap_mode="r")
        except (OSError, ValueError):
            return None
        if list(array.shape) != entry["shape"]:
            return None
    return meta


Advance = Callable[[int], None]
"""Called with the number of trajectories just encoded."""


@torch.no_grad()
def _encode_split(
    model: LatentSurrogate,
    part: TrajectoryWindows,
    out: Path,
    batch_size: int,
    dtype: str,
    device: torch.device,
    advance: Advance | None = None,
) -> list[int]:
    """Encode every trajectory of ``part`` (not empty) into the array ``out``; return its shape."""
    loader = DataLoader(part, batch_size=batch_size, shuffle=False)
    array: np.ndarray | None = None
    row = 0
    for batch in loader:
        fields = batch["fields"].to(device)
        b, t = fields.shape[:2]
        grid = batch["grid"].to(device).repeat_interleave(t, dim=0)
        z = model.encode(fields.flatten(0, 1), grid)
        z = z.view(b, t, *z.shape[1:])
        if array is None:
            shape = (len(part), t, *z.shape[2:])
            array = np.lib.format.open_memmap(out, mode="w+", dtype=dtype, shape=shape)
        array[row : row + b] = z.cpu().numpy().astype(dtype)
        row += b
        if advance is not None:
            advance(b)
    array.flush()
    return list(array.shape)


def open_or_build(
    model: LatentSurrogate,
    dm: PDEDataModule,
    cfg: LatentCacheConfig,
    splits: list[str] | tuple[str, ...] = ("train", "val"),
    device: torch.device | str | None = None,
    progress: Callable[[int], Advance] | None = None,
) -> LatentCache:
    """The cache entry for ``model`` on ``dm``'s data: reused when complete, else built.

    A build encodes on ``device`` (default: where ``model`` is) in eval mode; the model's
    device and mode are restored afterwards. ``progress(total)`` is called once a build starts,
    with the number of trajectories to encode, and returns the callback that is told how many
    were just encoded (a progress bar).
    """
    splits = list(splits)
    key, description = cache_key(dm.cfg, model, splits, cfg.dtype)
    root = Path(cfg.root)
    path = root / key
    meta = _complete(path, key)
    if meta is not None:
        return LatentCache(path, meta, built=False)
    parts = {split: dm.windows(split, None).datasets for split in splits}
    advance = None
    if progress is not None:
        advance = progress(sum(len(part) for split in splits for part in parts[split]))
    if path.exists():
        shutil.rmtree(path)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=root))
    was_training = model.training
    home = next(model.parameters()).device
    device = home if device is None else torch.device(device)
    try:
        model.to(device).eval()
        arrays = []
        for split in splits:
            for index, part in enumerate(parts[split]):
                if len(part) == 0:
                    continue
                name = f"{split}-{index}.npy"
                shape = _encode_split(
                    model, part, tmp / name, cfg.batch_size, cfg.dtype, device, advance
                )
                arrays.append(
                    {
                        "split": split,
                        "file": name,
                        "source": str(part.reader.info.path),
                        "task_id": part.task_id,
                        "dt": part.dt,
                        "params": part.params.tolist(),
                        "shape": shape,
                    }
                )
        meta = {"key": key, "description": description, "arrays": arrays}
        atomic_write_json(tmp / META, meta)
        try:
            os.rename(tmp, path)
        except OSError:
            # another process finished the same entry first: use theirs
            meta = _complete(path, key)
            if meta is None:
                raise
            return LatentCache(path, meta, built=False)
    finally:
        model.to(home).train(was_training)
        if tmp.exists():
            shutil.rmtree(tmp)
    return LatentCache(path, meta, built=True)
