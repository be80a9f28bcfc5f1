"""What the benchmark scripts share: device syncs, JSON output and a device-resident loader."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.utils.data import Dataset


def sync(device: torch.device) -> None:
    """Wait for the device (a no-op on the CPU), so timings end when the work does."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit(record: dict[str, Any]) -> None:
    """One measurement: one JSON line on stdout, flushed."""
    print(json.dumps(record), flush=True)


class SameBatch(Dataset):
    """The same pre-built device batch, ``length`` times (a ``batch_size=None`` loader), so a
    timed loop measures the training step and not the input pipeline."""

    def __init__(self, batch: Any, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.batch
