"""3D networks: MONAI UNet or DynUNet with per-axis strides, behind a pad-to-multiple wrapper.

Thick-slice volumes (e.g. 1.5 x 1.5 x 10 mm) want in-plane-only downsampling in the first levels
(`model.axis_strides`, as nnU-Net plans it). The wrapper pads any input up to the network's per-axis
size multiple and crops the logits back, so the teacher's rescaled views, sliding windows at volume
borders and small volumes never need sizes rounded to the network's stride.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, DynUNet, UNet
from torch import nn

from maskmatch_med.config import ModelConfig


def axis_strides(config: ModelConfig) -> list[list[int]]:
    """Per level, the stride along each of the 3 axes."""
    if config.axis_strides is not None:
        return [list(level) for level in config.axis_strides]
    return [[s, s, s] for s in config.strides]


def axis_divisors(config: ModelConfig) -> tuple[int, int, int]:
    """Input sizes must be multiples of these, per axis, for encoder and decoder shapes to line up."""
    if config.name == "basicunet":
        return (16, 16, 16)
    strides = axis_strides(config)
    return tuple(math.prod(level[a] for level in strides) for a in range(3))  # type: ignore[return-value]


def dynunet_kernels(strides: list[list[int]]) -> list[list[int]]:
    """nnU-Net's rule: an axis gets 3-wide kernels from the first level at which it is downsampled
    (its spacing is then comparable to the others'); before that, 1-wide (no mixing of thick slices)."""
    kernels = []
    for level in range(len(strides) + 1):
        kernels.append([3 if any(strides[j][a] > 1 for j in range(min(level + 1, len(strides)))) else 1 for a in range(3)])
    return kernels


class PadToMultiple(nn.Module):
    """Zero-pads (the normalised mean) every spatial axis up to a multiple of ``divisors`` and crops
    the output back. The network is ``.module``, so DDP-style unwrapping finds it."""

    def __init__(self, module: nn.Module, divisors: tuple[int, ...]):
        super().__init__()
        self.module = module
        self.divisors = tuple(int(d) for d in divisors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        padded = [-(-s // d) * d for s, d in zip(spatial, self.divisors)]
        if list(spatial) == padded:
            return self.module(x)
        pad: list[int] = []
        for s, p in reversed(list(zip(spatial, padded))):  # F.pad lists the last axis first
            pad += [0, p - s]
        out = self.module(F.pad(x, pad))
        return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]


def build_model_3d(config: ModelConfig, in_channels: int, num_classes: int) -> nn.Module:
    norm = "BATCH" if config.norm == "batch" else "INSTANCE"
    strides = axis_strides(config)
    if config.name == "unet":
        net: nn.Module = UNet(
            spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=config.channels,
            strides=[tuple(level) for level in strides], num_res_units=config.num_res_units, norm=norm, dropout=config.dropout,
        )
    elif config.name == "dynunet":
        net = DynUNet(
            spatial_dims=3, in_channels=in_channels, out_channels=num_classes, kernel_size=dynunet_kernels(strides),
            strides=[[1, 1, 1], *strides], upsample_kernel_size=strides, filters=config.channels,
            norm_name=norm.lower(), dropout=config.dropout or None, res_block=config.num_res_units > 0,
        )
    else:
        features = (list(config.channels) + [config.channels[-1]] * 6)[:5] + [config.channels[0]]
        net = BasicUNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, features=tuple(features),
                        norm=norm.lower(), dropout=config.dropout)
    return PadToMultiple(net, axis_divisors(config))
