"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True.

Contents: format version, package version, the resolved recipe (YAML text), class count and
spatial dims, the student ("model"), the EMA teacher, the weights used for inference ("inference"),
optimizer state, iteration, best validation score and the RNG states needed for an exact resume.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
import yaml

from maskmatch_med import __version__
from maskmatch_med.config import Recipe, recipe_from_dict
from maskmatch_med.engine.writers import atomic_path
from maskmatch_med.errors import UserError

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "recipe", "num_classes", "spatial_dims", "inference")


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write to a temporary file beside `path`, then rename: a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, "package_version": __version__, **payload}
    with atomic_path(path) as temp, open(temp, "wb") as stream:
        torch.save(payload, stream)
        stream.flush()
        os.fsync(stream.fileno())  # the rename must not overtake the data on a crash


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_PROTOCOL = 0x80  # first byte of the legacy torch.save format (a pickle stream)
UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def _looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file read as text (a recipe, a CSV, a log): no NUL byte, UTF-8."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start > len(head) - 4  # a multi-byte character cut at the end of the sample
    return True


def _not_a_torch_file(path: Path) -> str | None:
    """Why `path` cannot be a torch.save file without even unpickling it (empty, text), else None."""
    with open(path, "rb") as stream:
        head = stream.read(4096)
    if not head:
        return "not a checkpoint: the file is empty"
    if not head.startswith(ZIP_MAGIC) and head[0] != PICKLE_PROTOCOL and _looks_like_text(head):
        return "not a checkpoint: it is a text file"
    return None


def _refusal(error: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words. An unsafe file is named as
    such, with the Python object that made it so, and never with PyTorch's advice to load it unchecked."""
    text = str(error)
    unsafe = UNSAFE_GLOBAL.search(text)
    if unsafe or "Unsupported global" in text:
        what = f" ({unsafe.group(1)})" if unsafe else ""
        return (
            f"refused: it holds pickled Python objects{what}, which could run code when loaded; "
            "maskmatch-med reads only files of tensors and plain values"
        )
    if "PytorchStreamReader" in text or isinstance(error, EOFError):
        return "not a readable checkpoint: truncated or damaged (its archive cannot be read)"
    if "weights_only" in text or "WeightsUnpickler" in text or "invalid load key" in text or isinstance(error, pickle.UnpicklingError):
        return "not a readable checkpoint: not a PyTorch checkpoint file"
    return f"not a readable checkpoint: {(text.strip().splitlines() or [type(error).__name__])[0][:200]}"


def read_torch_file(path: Path, map_location: str | torch.device = "cpu", hint: str = "") -> object:
    """torch.load with weights_only=True (tensors and plain values only: a file cannot run code), every
    failure a one-line UserError `PATH: what the file is instead` (+ `hint` for a text file)."""
    path = Path(path)
    reason = _not_a_torch_file(path)
    if reason:
        raise UserError(f"{path}: {reason}{hint if reason.endswith('text file') else ''}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or pickled files
        raise UserError(f"{path}: {_refusal(error)}") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load safely (read_torch_file); anything that is not a maskmatch-med checkpoint is a one-line
    UserError saying what the file is instead."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    payload = read_torch_file(path, map_location, hint=" (a run's checkpoints are RUN/checkpoints/best.pt and last.pt)")
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        raise UserError(f"{path}: not a maskmatch-med checkpoint (expected keys {', '.join(REQUIRED_KEYS)})")
    if payload["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {payload['format_version']} is newer than this maskmatch-med understands")
    return payload


def recipe_of(payload: dict, path: Path) -> Recipe:
    return recipe_from_dict(yaml.safe_load(payload["recipe"]), f"{path} (stored recipe)")


def load_state(module: torch.nn.Module, state: dict, path: Path, what: str) -> None:
    """load_state_dict with a one-line error instead of PyTorch's multi-line report."""
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"{path}: {what} weights do not fit this model ({first})") from None
