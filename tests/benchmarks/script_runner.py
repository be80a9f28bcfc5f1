"""Running ``benchmarks/*.py`` as the docs do, for the benchmark tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"


def run_benchmark(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/<name> ARGS`` from the repository root, one thread, output captured."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / name), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1"),
        cwd=ROOT,
        timeout=300,
    )


def json_records(name: str, *args: str) -> tuple[list[dict], str]:
    """Run a benchmark that must succeed: every stdout line one JSON object; and its stderr."""
    proc = run_benchmark(name, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr
