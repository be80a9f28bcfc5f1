"""benchmarks/ablations.py: quickstart variants on one shared data set, one JSON line each."""

import pytest
from script_runner import json_records

TINY = ("--set", "generate.samples=16", "--set", "trainer.max_epochs=1")


@pytest.mark.slow
def test_each_variant_is_the_quickstart_with_its_overrides(tmp_path):
    records, _ = json_records("ablations.py", "--out", str(tmp_path), "--variants", "adamw", *TINY)
    (record,) = records  # stdout holds nothing but the JSON lines
    assert record["variant"] == "adamw"
    assert record["overrides"] == [
        "generate.samples=16",
        "trainer.max_epochs=1",
        "optimizer.name=adamw",
    ]
    assert record["steps"] >= 1 and record["test_onestep_nrmse"] > 0
    assert (tmp_path / "adamw" / "summary.json").is_file()
    assert (tmp_path / "data" / "burgers1d.hdf5").is_file()  # generated once, shared
