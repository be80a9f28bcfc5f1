"""Core imports no family: families register by import path and load only when named."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lightstack.core.config import ConfigError
from lightstack.core.families import register_family, schema_for

ROOT = Path(__file__).resolve().parents[2]

# Runs `lightstack config validate` in a fresh interpreter, then lists the loaded modules.
VALIDATE = """
import json, sys
from typer.testing import CliRunner
from lightstack.cli import app
result = CliRunner().invoke(app, ["config", "validate", "--config", sys.argv[1]])
print(json.dumps({"exit": result.exit_code, "output": result.output,
                  "modules": sorted(m for m in sys.modules if m.startswith("lightstack"))}))
"""

IMPORT_CORE = """
import json, pkgutil, importlib, sys
import lightstack.core
for info in pkgutil.walk_packages(lightstack.core.__path__, "lightstack.core."):
    importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("lightstack"))))
"""


def _python(code: str, *args: str) -> str:
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("config", "family", "other"),
    [
        ("configs/physics/quickstart.yaml", "physics", "video"),
        # the video config's schema imports torch and Lightning: a few seconds
        pytest.param("configs/video/quickstart.yaml", "video", "physics", marks=pytest.mark.slow),
    ],
)
def test_config_validate_loads_only_the_named_family(config, family, other):
    seen = json.loads(_python(VALIDATE, str(ROOT / config)))
    assert seen["exit"] == 0, seen["output"]
    assert f"valid {family} configuration" in seen["output"]
    assert f"lightstack.{family}.config" in seen["modules"]
    assert not [m for m in seen["modules"] if m.startswith(f"lightstack.{other}")]


@pytest.mark.slow
def test_importing_all_of_core_imports_no_family():
    modules = json.loads(_python(IMPORT_CORE))
    assert "lightstack.core.families" in modules
    above = [m for m in modules if not m.startswith("lightstack.core") and m != "lightstack"]
    assert above == []


def test_unknown_family_names_the_registered_ones():
    import lightstack.families  # noqa: F401  (the package root registers the shipped families)

    with pytest.raises(ConfigError) as err:
        schema_for("chemistry", "c.yaml")
    assert err.value.errors[0][0] == "family"
    assert "'physics'" in str(err.value) and "'chemistry'" in str(err.value)


def test_registration_needs_module_and_attribute():
    with pytest.raises(ValueError, match="module:attribute"):
        register_family("chemistry", schema="chem.config", commands="chem.cli:app")
