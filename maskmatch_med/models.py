"""Model factory: MONAI networks by name."""

from __future__ import annotations

import math

from monai.networks.nets import BasicUNet, UNet
from torch import nn

from maskmatch_med.config import ModelConfig


def build_model(config: ModelConfig, spatial_dims: int, in_channels: int, num_classes: int) -> nn.Module:
    """A segmentation network that maps (B, in_channels, *spatial) to (B, num_classes, *spatial) logits."""
    if config.name == "deeplabv3plus":
        from maskmatch_med.networks.deeplabv3plus import build_deeplabv3plus

        return build_deeplabv3plus(config, in_channels, num_classes)
    if spatial_dims == 3:
        from maskmatch_med.models3d import build_model_3d

        return build_model_3d(config, in_channels, num_classes)
    norm = "BATCH" if config.norm == "batch" else "INSTANCE"
    if config.name == "unet":
        return UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=num_classes,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm=norm,
            dropout=config.dropout,
        )
    # BasicUNet has a fixed depth of 4 poolings and takes exactly 6 feature sizes.
    features = (list(config.channels) + [config.channels[-1]] * 6)[:5] + [config.channels[0]]
    return BasicUNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=num_classes,
        features=tuple(features),
        norm=("batch" if config.norm == "batch" else "instance"),
        dropout=config.dropout,
    )


def size_divisor(config: ModelConfig) -> int:
    """Input sizes must be multiples of this for the encoder/decoder shapes to line up."""
    if config.spatial_dims == 3:
        return 1  # 3D networks pad any input to their per-axis multiple (models3d.PadToMultiple)
    if config.name == "basicunet":
        return 16
    if config.name == "deeplabv3plus":  # any size works: logits are interpolated back to the input's
        return 1
    return math.prod(config.strides)
