"""Running ``benchmarks/*.py`` as the docs do, for the benchmark tests."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def load_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as a module, with ``benchmarks/`` on the path as
    ``python benchmarks/<name>.py`` has it (for ``bench_common``)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
