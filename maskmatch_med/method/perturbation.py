"""UniMatch's feature perturbation: channel dropout on the encoder's features.

UniMatch decodes a perturbed copy of the encoder features of the weak view. Here the perturbation is
applied by forward hooks on the network's encoder blocks (their outputs feed both the next encoder
level and the skip connections), so any supported network gets it without a forked forward().
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from monai.networks.layers import SkipConnection
from monai.networks.nets import BasicUNet, DynUNet, UNet
from torch import nn


def encoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks whose outputs are the encoder features, shallow to deep (bottleneck last)."""
    while hasattr(model, "module"):  # DDP, and the 3D pad-to-multiple wrapper (models3d)
        model = model.module
    if isinstance(model, UNet):
        blocks, level = [], model.model
        while True:  # MONAI's UNet nests Sequential(down, SkipConnection(inner), up) per level
            blocks.append(level[0])
            inner = level[1].submodule
            if isinstance(inner, nn.Sequential) and len(inner) == 3 and isinstance(inner[1], SkipConnection):
                level = inner
            else:
                blocks.append(inner)  # the bottom block
                return blocks
    if isinstance(model, BasicUNet):
        return [model.conv_0, model.down_1, model.down_2, model.down_3, model.down_4]
    if isinstance(model, DynUNet):
        return [model.input_block, *model.downsamples, model.bottleneck]
    from maskmatch_med.networks.deeplabv3plus import DeepLabV3Plus

    if isinstance(model, DeepLabV3Plus):  # UniMatch's two perturbed features: layer1 (skip) and layer4 (ASPP input)
        return [model.low_level, model.high_level]
    raise TypeError(f"feature perturbation does not know the encoder of {type(model).__name__}")


def channel_dropout(features: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Zero whole channels with probability p per (sample, channel), rescaling the rest by 1/(1-p)."""
    if p <= 0:
        return features
    shape = features.shape[:2] + (1,) * (features.ndim - 2)
    keep = torch.rand(shape, generator=generator, device=generator.device if generator else features.device) >= p
    return features * keep.to(features.device, features.dtype) / (1.0 - p)


@contextmanager
def perturbed_encoder(model: nn.Module, p: float, generator: torch.Generator | None = None) -> Iterator[None]:
    """Within the block, every forward pass of `model` sees channel-dropped encoder features."""
    hooks = [block.register_forward_hook(lambda _m, _i, out: channel_dropout(out, p, generator)) for block in encoder_blocks(model)]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
