"""Byte-level fuzzing of the HDF5 and checkpoint readers, run in its own process by test_fuzz.py
(a reader that crashed the interpreter would otherwise take the test session with it).

``python fuzz_files.py <workdir> <cases>``: corrupts a tiny valid PDEBench file and a tiny
lightstack checkpoint ``cases`` times each (flipped bytes, truncation, zeroed blocks). Every read
must succeed or raise the documented error; anything else is printed and the exit status is 1.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import numpy as np
import torch

from lightstack.core.checkpoints import META_KEY, CheckpointError, load_checkpoint
from lightstack.physics.data.pdebench import PDEBenchError, PDEBenchReader
from lightstack.physics.data.windows import read_finite


def corrupt(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(3)
    if kind == 0:  # flip a few bytes
        for i in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
            buf[i] ^= int(rng.integers(1, 256))
        return bytes(buf)
    if kind == 1:  # truncate
        return bytes(buf[: int(rng.integers(0, len(buf)))])
    start = int(rng.integers(0, len(buf)))  # zero a block
    buf[start : start + int(rng.integers(1, 512))] = bytes(min(512, len(buf) - start))
    return bytes(buf)[: len(data)]


def read_pdebench(path: Path) -> None:
    """What training reads: the file's layout, then every sample, checked for NaN/Inf."""
    with PDEBenchReader(path, 1, 1) as reader:
        for sample in range(reader.info.n_samples):
            read_finite(reader, sample)


def main(workdir: Path, cases: int) -> int:
    from reliability_support import write_tiny_pdebench

    rng = np.random.default_rng(0)
    h5 = write_tiny_pdebench(workdir / "valid.h5", samples=3, times=4, cells=8).read_bytes()
    ckpt_path = workdir / "valid.ckpt"
    torch.save({"state_dict": {"w": torch.ones(4)}, META_KEY: {"family": "physics"}}, ckpt_path)
    ckpt = ckpt_path.read_bytes()
    targets = [
        ("h5", h5, read_pdebench, PDEBenchError),
        ("ckpt", ckpt, load_checkpoint, CheckpointError),
    ]
    failures = 0
    for suffix, valid, read, documented in targets:
        for case in range(cases):
            path = workdir / f"case{case}.{suffix}"
            path.write_bytes(corrupt(valid, rng))
            try:
                read(path)
            except documented:
                pass
            except Exception:
                failures += 1
                print(f"--- {path} ({type(read).__name__} {read.__name__}) ---")
                traceback.print_exc(file=sys.stdout)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
