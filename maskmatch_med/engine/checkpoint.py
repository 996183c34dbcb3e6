"""Checkpoints: plain dicts of tensors and primitives, written atomically, read with weights_only=True.

Contents: format version, package version, the resolved recipe (YAML text), class count and
spatial dims, the student ("model"), the EMA teacher, the weights used for inference ("inference"),
optimizer state, iteration, best validation score and the RNG states needed for an exact resume.
"""

from __future__ import annotations

import os
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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load safely; anything that is not a maskmatch-med checkpoint is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for truncated, foreign or pickled files
        text = str(error)
        if "Unsupported global" in text:
            reason = "it contains pickled Python objects, refused for safety (weights_only loading)"
        elif "WeightsUnpickler" in text or "invalid load key" in text:
            reason = "not a PyTorch checkpoint file"
        else:
            reason = (text.strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path}: not a readable checkpoint: {reason}") from None
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
