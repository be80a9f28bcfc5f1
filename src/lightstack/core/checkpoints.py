"""Checkpoints: atomic saves, self-describing metadata, safe loading, conversion, plain modules.

Every lightstack checkpoint carries a ``"lightstack"`` entry: the family and stage that wrote
it, the resolved config (plain dict) and an architecture fingerprint, so a model can be rebuilt
from the file alone and a mismatched one is refused. Loading always uses
``torch.load(weights_only=True)``: a file that needs unpickling of arbitrary objects is refused,
and so is one whose weights hold NaN/Inf (every loader: resume, evaluation, conversion, stage
hand-off and prediction read checkpoints through ``load_checkpoint``).

Three formats hold the same weights and metadata (``convert_checkpoint`` goes between them,
``load_checkpoint`` reads all three into ``{"state_dict": ..., "lightstack": ...}``):

- ``lightning``: Lightning's checkpoint (``torch.save``), as training writes it, with optimizer,
  scheduler and loop state; converted ones are weights-only (like ``save_weights_only``).
- ``state_dict``: ``torch.save({"state_dict": ..., "lightstack": ...})``, weights and metadata.
- ``safetensors``: the tensors, with the metadata JSON-encoded in the header (no pickle at all).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import lightning
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lightstack.core.io import atomic_path

META_KEY = "lightstack"
FORMAT_VERSION = 1

CheckpointFormat = Literal["lightning", "state_dict", "safetensors"]
FORMATS: tuple[CheckpointFormat, ...] = ("lightning", "state_dict", "safetensors")
# Lightning checkpoint entries kept by a conversion (optimizer/loop/callback state is dropped).
LIGHTNING_KEYS = ("epoch", "global_step", "pytorch-lightning_version")
SUFFIXES: dict[str, CheckpointFormat] = {
    ".ckpt": "lightning",
    ".pt": "state_dict",
    ".pth": "state_dict",
    ".safetensors": "safetensors",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, foreign or mismatched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic, durable saves; safe loads; never non-finite weights.

    A checkpoint is written to a temporary file, flushed to disk and renamed into place, so a
    kill or a full disk during a save leaves the previous file intact. Weights holding NaN/Inf
    are not written (the previous checkpoint stays, with a warning). Loading always uses
    ``weights_only=True`` and turns any failure into a ``CheckpointError`` naming the file.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        bad = non_finite_weights(checkpoint.get("state_dict", {}))
        if bad:
            rank_zero_warn(
                f"not writing checkpoint {path}: weight {bad!r} holds NaN/Inf; the previous "
                "checkpoint of that name (if any) is kept"
            )
            return
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
        except RuntimeError as exc:  # torch's writer reports a failed write (full disk) so
            raise _write_error(exc, path) from exc

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not Path(path).is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises several types for truncated / foreign files
            raise CheckpointError(
                f"checkpoint {path} could not be loaded safely (truncated, not a checkpoint, or "
                f"it holds arbitrary Python objects): {exc}"
            ) from exc


def _write_error(exc: BaseException, path: str | Path) -> OSError:
    """An ``OSError`` naming ``path``, with the errno of the OS error behind ``exc`` if any."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, OSError) and cause.errno is not None:
        return OSError(cause.errno, cause.strerror or str(cause), str(path))
    return OSError(f"cannot write checkpoint {path}: {exc}")


def non_finite_weights(state: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor in ``state`` holding NaN/Inf, or None."""
    for key, value in state.items():
        if (
            isinstance(value, torch.Tensor)
            and value.is_floating_point()
            and not bool(torch.isfinite(value).all())
        ):
            return key
    return None


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


def is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes) and then the JSON header."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[:4] != b"PK\x03\x04" and head[8:9] == b"{"


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
            header = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"safetensors file {path} could not be read: {exc}") from exc
    if META_KEY not in header:
        raise CheckpointError(
            f"{path} is not a lightstack checkpoint (no '{META_KEY}' entry in the safetensors "
            "metadata)"
        )
    try:
        ckpt: dict[str, Any] = {"state_dict": state, META_KEY: json.loads(header[META_KEY])}
        ckpt.update(json.loads(header.get("lightning", "{}")))
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{path}: malformed metadata in the safetensors header: {exc}"
        ) from exc
    return ckpt


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> dict[str, Any]:
    """Load a lightstack checkpoint of any format safely, refusing anything else clearly.

    Returns at least ``{"state_dict": {...}, "lightstack": {...}}``; a Lightning checkpoint
    keeps its other entries, converted files keep ``epoch``/``global_step`` when they had them.
    ``mmap`` maps tensors from the file instead of reading them (cheap checks of large files).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if is_safetensors(path):
        return _finite(_load_safetensors(path, map_location), path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for truncated / foreign files
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely (not a lightstack checkpoint, "
            f"truncated, or it holds arbitrary Python objects): {exc}"
        ) from exc
    if not isinstance(ckpt, dict) or META_KEY not in ckpt:
        raise CheckpointError(
            f"{path} is not a lightstack checkpoint (no '{META_KEY}' metadata entry)"
        )
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path} has no 'state_dict' entry of weights")
    return _finite(ckpt, path)


def _finite(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    """``ckpt``, after checking that no weight holds NaN/Inf (``CheckpointError`` naming it)."""
    bad = non_finite_weights(ckpt["state_dict"])
    if bad is not None:
        value = ckpt["state_dict"][bad]
        count = int((~torch.isfinite(value)).sum())
        raise CheckpointError(
            f"checkpoint {path}: weight {bad!r} holds NaN/Inf ({count} of {value.numel()} "
            "values); the file is damaged or was saved from a diverged model. Use an earlier "
            "checkpoint of the run"
        )
    return ckpt


def _tensors_for_safetensors(state: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with its own storage (safetensors refuses shared storage)."""
    out: dict[str, torch.Tensor] = {}
    storages: set[tuple[int, int]] = set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"cannot write {path} as safetensors: state_dict entry {key!r} is a "
                f"{type(value).__name__}, not a tensor"
            )
        tensor = value.detach().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.device.index or 0)
        if storage in storages or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()
        storages.add((tensor.untyped_storage().data_ptr(), tensor.device.index or 0))
        out[key] = tensor
    return out


def save_as(ckpt: dict[str, Any], path: str | Path, fmt: CheckpointFormat) -> Path:
    """Write the weights and metadata of a loaded checkpoint ``ckpt`` to ``path`` as ``fmt``.

    Optimizer, scheduler, loop and callback state are not written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    lightning_keys = {k: ckpt[k] for k in LIGHTNING_KEYS if k in ckpt}
    if fmt == "safetensors":
        tensors = _tensors_for_safetensors(ckpt["state_dict"], path)
        header = {"format": "pt", META_KEY: json.dumps(ckpt[META_KEY])}
        if lightning_keys:
            header["lightning"] = json.dumps(lightning_keys)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path
    out: dict[str, Any] = {"state_dict": ckpt["state_dict"], META_KEY: ckpt[META_KEY]}
    if fmt == "lightning":
        defaults = {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": lightning.__version__,
        }
        out = {**defaults, **lightning_keys, **out}
    elif "epoch" in lightning_keys:
        out.update({k: v for k, v in lightning_keys.items() if k != "pytorch-lightning_version"})
    with atomic_path(path) as tmp:
        torch.save(out, tmp)
    return path


def format_for(path: str | Path) -> CheckpointFormat:
    """The format an output file name asks for by its suffix (``.ckpt``, ``.pt``, ...)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix; name it "
            f"{', '.join(SUFFIXES)} or pass --to {'|'.join(FORMATS)}"
        )
    return SUFFIXES[suffix]


def convert_checkpoint(
    src: str | Path, dst: str | Path, to: CheckpointFormat | None = None
) -> Path:
    """Convert a lightstack checkpoint to ``to`` (default: from ``dst``'s suffix), weights only."""
    if Path(src).resolve() == Path(dst).resolve():
        raise ValueError(f"convert: input and output are the same file ({src})")
    return save_as(load_checkpoint(src), dst, to or format_for(dst))


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
