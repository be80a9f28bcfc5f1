"""Fuzzing: random configs, overrides, label rows, annotation files and damaged HDF5 /
checkpoint bytes either work or raise the documented error (``ConfigError``,
``AnnotationError``, ``PDEBenchError``, ``CheckpointError``), never anything else."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from reliability_support import SRC

from lightstack.core.config import ConfigError, load_config, read_yaml, validate
from lightstack.physics.config import PhysicsConfig
from lightstack.physics.data.pdebench import PDEBenchError, PDEBenchReader
from lightstack.physics.data.windows import read_finite
from lightstack.video.config import VideoConfig
from lightstack.video.labels import (
    ACTION_CLASSES,
    OFFENCE_VALUES,
    SEVERITY_VALUES,
    AnnotationError,
    SkipReason,
    label_or_skip_reason,
    load_annotations,
    parse_label,
)

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "50")),
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of a config schema (sections and leaves)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths += field_paths(annotation, f"{path}.")
    return paths


PATHS = sorted(set(field_paths(PhysicsConfig) + field_paths(VideoConfig)))
KEYS = st.sampled_from(sorted({p.split(".")[-1] for p in PATHS})) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["cpu", "auto", "32-true", "bf16-mixed", "r3d_18", "skip", "1e-3", "${x}"])
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def nested(paths: list[str], values: list[Any]) -> dict[str, Any]:
    """A mapping with ``values`` placed at the dotted ``paths`` (later paths win)."""
    data: dict[str, Any] = {}
    for path, value in zip(paths, values, strict=False):
        node = data
        *parents, leaf = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    return data


@FUZZ
@given(
    family=st.sampled_from(["physics", "video"]),
    paths=st.lists(st.sampled_from(PATHS), max_size=6),
    values=st.lists(VALUES, max_size=6),
    extra=st.dictionaries(KEYS, VALUES, max_size=3),
)
def test_random_config_files_load_or_raise_config_error(family, paths, values, extra):
    data = {**nested(paths, values), **extra, "family": family}
    schema = PhysicsConfig if family == "physics" else VideoConfig
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        try:
            cfg = load_config(path, [], schema)
        except ConfigError as exc:
            assert str(path) in str(exc)
        else:
            assert isinstance(cfg, schema)


@FUZZ
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(PATHS) | st.text(max_size=10), st.text(max_size=12)).map("=".join)
        | st.text(max_size=16),
        max_size=4,
    )
)
def test_random_overrides_apply_or_raise_config_error(overrides):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text("family: physics\n")
        with contextlib.suppress(ConfigError):
            load_config(path, overrides, PhysicsConfig)


@FUZZ
@given(text=st.text(max_size=80) | st.binary(max_size=80).map(lambda b: b.decode("latin-1")))
def test_random_yaml_text_reads_or_raises_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            data = read_yaml(path)
        except ConfigError:
            return
        with contextlib.suppress(ConfigError):
            validate(PhysicsConfig, {**data, "family": "physics"}, str(path))


LABEL_STRINGS = st.sampled_from(
    [*ACTION_CLASSES, *OFFENCE_VALUES, *SEVERITY_VALUES, "Dont know", "Between", "2.0", "x"]
)
LABEL_VALUES = LABEL_STRINGS | st.text(max_size=6) | st.none() | st.integers() | st.floats()
ACTION = st.dictionaries(
    st.sampled_from(["Action class", "Offence", "Severity", "Clips", "other"]),
    LABEL_VALUES,
    max_size=5,
)


@FUZZ
@given(action=ACTION | st.none() | st.lists(LABEL_VALUES, max_size=3), action_id=st.text())
def test_random_label_rows_give_a_label_a_skip_or_annotation_error(action, action_id):
    try:
        label = label_or_skip_reason(action, action_id, "fuzz.json")
    except AnnotationError as exc:
        assert "fuzz.json" in str(exc)
        return
    if isinstance(label, SkipReason):
        assert parse_label(action, action_id) is None
    else:
        action_index, offence_index = label
        assert 0 <= action_index < len(ACTION_CLASSES) and 0 <= offence_index < 4
        assert parse_label(action, action_id) == label


CLIPS = st.lists(
    st.dictionaries(st.sampled_from(["Url", "Camera type"]), LABEL_VALUES | st.text(), max_size=2)
    | LABEL_VALUES,
    max_size=3,
)
ANNOTATIONS = st.dictionaries(
    st.sampled_from(["Set", "Number of actions", "Actions", "x"]),
    st.dictionaries(st.text(max_size=3), ACTION.map(dict) | st.none(), max_size=3) | LABEL_VALUES,
    max_size=4,
)


@FUZZ
@given(annotations=ANNOTATIONS | st.lists(st.integers(), max_size=2), clips=CLIPS)
def test_random_annotation_files_load_or_raise_annotation_error(annotations, clips):
    if isinstance(annotations, dict) and isinstance(annotations.get("Actions"), dict):
        for action in annotations["Actions"].values():
            if isinstance(action, dict):
                action["Clips"] = clips
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "annotations.json"
        path.write_text(json.dumps(annotations))
        try:
            loaded = load_annotations(path)
        except AnnotationError as exc:
            assert str(path) in str(exc)
        else:
            assert all(record.clips for record in loaded)


LAYOUT_KEYS = ["tensor", "x-coordinate", "t-coordinate", "density", "pressure", "Vx", "nu", "0000"]


@FUZZ
@given(
    datasets=st.dictionaries(
        st.sampled_from(LAYOUT_KEYS),
        st.lists(st.integers(1, 4), min_size=1, max_size=4),
        max_size=5,
    ),
    nan=st.booleans(),
)
def test_random_hdf5_layouts_read_or_raise_pdebench_error(datasets, nan):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "data.h5"
        with h5py.File(path, "w") as f:
            for key, shape in datasets.items():
                values = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
                if nan:
                    values.flat[-1] = np.nan
                target = f.create_group(key) if key == "0000" else f
                target.create_dataset("data" if key == "0000" else key, data=values)
        try:
            with PDEBenchReader(path, 1, 1) as reader:
                for sample in range(reader.info.n_samples):
                    read_finite(reader, sample)
        except PDEBenchError as exc:
            assert exc.path == path


@pytest.mark.timeout(120)
def test_damaged_hdf5_and_checkpoint_bytes_raise_only_documented_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{Path(__file__).parent}"}
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("fuzz_files.py")), str(tmp_path), "150"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
