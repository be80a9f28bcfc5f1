"""Checkpoints: atomic saves, self-describing metadata, safe loading and plain-module hand-off.

Every lightstack checkpoint carries a ``"lightstack"`` entry: the family and stage that wrote
it, the resolved config (plain dict) and an architecture fingerprint, so a model can be rebuilt
from the file alone and a mismatched one is refused. Loading always uses
``torch.load(weights_only=True)``: a file that needs unpickling of arbitrary objects is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import nn

from lightstack.core.io import atomic_path

META_KEY = "lightstack"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, foreign or mismatched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of parameter/buffer names and shapes: equal iff state dicts are interchangeable."""
    spec = sorted((k, tuple(v.shape)) for k, v in model.state_dict().items())
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def make_metadata(
    family: str, stage: str, config: dict[str, Any], model: nn.Module
) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "family": family,
        "stage": stage,
        "config": config,
        "fingerprint": architecture_fingerprint(model),
    }


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a lightstack checkpoint safely, refusing anything else with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely (not a lightstack checkpoint, "
            f"truncated, or it holds arbitrary Python objects): {exc}"
        ) from exc
    if not isinstance(ckpt, dict) or META_KEY not in ckpt:
        raise CheckpointError(
            f"{path} is not a lightstack checkpoint (no '{META_KEY}' metadata entry)"
        )
    return ckpt


def checkpoint_metadata(ckpt: dict[str, Any], path: str | Path, family: str) -> dict[str, Any]:
    meta = ckpt[META_KEY]
    if meta.get("family") != family:
        raise CheckpointError(
            f"{path} was written by the {meta.get('family')!r} workload; expected a {family!r} "
            "checkpoint"
        )
    return meta


def module_state_dict(ckpt: dict[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The ``nn.Module`` weights inside a Lightning checkpoint (keys without ``prefix``)."""
    state = ckpt.get("state_dict", {})
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_into(
    model: nn.Module, ckpt: dict[str, Any], path: str | Path, prefix: str = "model."
) -> nn.Module:
    """Load checkpoint weights into ``model`` after checking the architecture fingerprint."""
    expected = ckpt[META_KEY].get("fingerprint")
    found = architecture_fingerprint(model)
    if expected is not None and expected != found:
        raise CheckpointError(
            f"{path}: architecture fingerprint {expected} does not match the model built from "
            f"its config ({found}); the checkpoint was written by a different model definition"
        )
    model.load_state_dict(module_state_dict(ckpt, prefix), strict=True)
    return model
