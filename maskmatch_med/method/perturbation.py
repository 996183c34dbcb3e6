"""UniMatch's feature perturbation: channel dropout on the encoder features the decoder reads.

UniMatch runs the encoder once, cleanly, and decodes a channel-dropped copy of every encoder feature.
Here forward hooks drop channels exactly where encoder features enter the decoder (the skip
connections and the bottleneck), so the encoder itself stays clean, nothing compounds from one level
to the next, and any supported network gets it without a forked forward(). `rows` limits the
perturbation to part of the batch, so the perturbed view shares one forward pass (and its batch
statistics) with the other views, as in UniMatch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import BasicUNet, DynUNet, UNet
from torch import nn


@dataclass(frozen=True)
class Tap:
    """One place where an encoder feature enters the decoder.

    kind "output": the module's whole output is the feature (UNet's bottom block, DeepLabV3+'s taps);
    "skip": a SkipConnection whose output is cat(feature, inner(feature)), so only its first channels;
    "inputs": the positional arguments `inputs` of a decoder block (BasicUNet's UpCat, DynUNet's up blocks).
    """

    module: nn.Module
    kind: str
    inputs: tuple[int, ...] = ()


def feature_taps(model: nn.Module) -> list[Tap]:
    """The encoder features as the decoder reads them, shallow to deep."""
    while hasattr(model, "module"):  # DDP, and the 3D pad-to-multiple wrapper (models3d)
        model = model.module
    if isinstance(model, UNet):
        taps, level = [], model.model
        while True:  # MONAI's UNet nests Sequential(down, SkipConnection(inner), up) per level
            skip = level[1]
            taps.append(Tap(skip, "skip"))
            inner = skip.submodule
            if isinstance(inner, nn.Sequential) and len(inner) == 3 and isinstance(inner[1], SkipConnection):
                level = inner
            else:
                taps.append(Tap(inner, "output"))  # the bottom block feeds only the decoder
                return taps
    if isinstance(model, BasicUNet):  # upcat_k(decoder input, encoder feature); upcat_4 reads the bottleneck too
        return [Tap(model.upcat_1, "inputs", (1,)), Tap(model.upcat_2, "inputs", (1,)), Tap(model.upcat_3, "inputs", (1,)),
                Tap(model.upcat_4, "inputs", (0, 1))]
    if isinstance(model, DynUNet):  # upsamples[0] is the deepest: upsample(bottleneck output, deepest feature)
        ups = list(model.upsamples)
        return [Tap(up, "inputs", (0, 1) if i == 0 else (1,)) for i, up in reversed(list(enumerate(ups)))]
    from maskmatch_med.networks.deeplabv3plus import DeepLabV3Plus

    if isinstance(model, DeepLabV3Plus):  # UniMatch's two perturbed features: layer1 (skip) and layer4 (ASPP input)
        return [Tap(model.low_level, "output"), Tap(model.high_level, "output")]
    raise TypeError(f"feature perturbation does not know the encoder of {type(model).__name__}")


def channel_dropout(features: torch.Tensor, p: float, generator: torch.Generator | None, rows: slice = slice(None),
                    channels: int | None = None) -> torch.Tensor:
    """Zero whole channels with probability p per (sample, channel) of the samples `rows`, rescaling the
    kept ones by 1/(1-p); the other samples, and the channels from `channels` on, pass unchanged.

    One multiply by a per-(sample, channel) scale, so a partly perturbed output is never split and
    re-concatenated; a scale of exactly 1 leaves the untouched values bit-identical."""
    if p <= 0:
        return features
    channels = features.shape[1] if channels is None else channels
    trailing = (1,) * (features.ndim - 2)
    count = len(range(features.shape[0])[rows])
    keep = torch.rand((count, channels, *trailing), generator=generator, device=generator.device if generator else features.device) >= p
    scale = torch.ones((features.shape[0], features.shape[1], *trailing), device=features.device, dtype=features.dtype)
    scale[rows, :channels] = keep.to(features.device, features.dtype) / (1.0 - p)
    return features * scale


def _hook(tap: Tap, drop) -> torch.utils.hooks.RemovableHandle:
    if tap.kind == "output":
        return tap.module.register_forward_hook(lambda _m, _i, out: drop(out))
    if tap.kind == "skip":  # out = cat(feature, inner(feature)): only the feature's channels are dropped
        return tap.module.register_forward_hook(lambda _m, inputs, out: drop(out, inputs[0].shape[1]))
    return tap.module.register_forward_pre_hook(lambda _m, args: tuple(drop(a) if i in tap.inputs else a for i, a in enumerate(args)))


@contextmanager
def perturbed_encoder(model: nn.Module, p: float, generator: torch.Generator | None = None, rows: slice = slice(None)) -> Iterator[None]:
    """Within the block, every forward pass of `model` decodes channel-dropped encoder features for
    the samples `rows` (all by default)."""
    handles = [_hook(tap, lambda t, channels=None: channel_dropout(t, p, generator, rows, channels)) for tap in feature_taps(model)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
