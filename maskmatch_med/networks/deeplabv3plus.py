"""DeepLabV3+ (Chen et al., ECCV 2018) on a ResNet-50/101 encoder built from MONAI's ResNet.

The layout follows UniMatch's DeepLabV3+: output stride 16 (layer4 dilated instead of strided),
ASPP with dilations 6/12/18 and image pooling on layer4, a 48-channel projection of layer1 as the
low-level skip, two 3x3 fusion convolutions, a 1x1 classifier, logits upsampled to the input size.

MONAI's ResNet uses torchvision's parameter names (conv1, bn1, layerN.M.convK, downsample.0/1), so an
ImageNet state dict saved by torchvision loads as it is (`load_pretrained`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from maskmatch_med.errors import UserError

LAYERS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


def resnet_encoder(name: str, in_channels: int = 3) -> ResNet:
    """An ImageNet-shaped 2D ResNet (7x7/2 stem, max pool, bottlenecks) with output stride 16.

    MONAI's ResNet has no dilation option, so after construction layer4's stride-2 convolutions (the
    first block's 3x3 and its 1x1 downsample) are set to stride 1 and the 3x3 convolutions of the
    following blocks to dilation 2, as torchvision's replace_stride_with_dilation=[False, False, True]
    does. Only stride/dilation/padding attributes change, so the parameters (and their names) are
    exactly those of the undilated network and ImageNet weights still fit.
    """
    if name not in LAYERS:
        raise ValueError(f"unknown backbone {name!r} (available: {', '.join(LAYERS)})")
    net = ResNet(
        block="bottleneck", layers=LAYERS[name], block_inplanes=[64, 128, 256, 512], spatial_dims=2,
        n_input_channels=in_channels, conv1_t_size=7, conv1_t_stride=2, feed_forward=False, bias_downsample=False,
    )
    first = net.layer4[0]
    first.conv2.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    for block in list(net.layer4)[1:]:
        block.conv2.dilation, block.conv2.padding = (2, 2), (2, 2)
    return net


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=padding, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ASPPPooling(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.project = _conv_bn_relu(cin, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, *x.shape[2:])  # bilinear upsampling of a 1x1 map is a broadcast


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, dilations: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, cout)] + [_conv_bn_relu(cin, cout, 3, d) for d in dilations] + [ASPPPooling(cin, cout)]
        )
        self.project = nn.Sequential(_conv_bn_relu(cout * len(self.branches), cout), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "resnet101", in_channels: int = 3, dilations=(6, 12, 18)):
        super().__init__()
        self.backbone = resnet_encoder(backbone, in_channels)
        # Identity taps on the two encoder features the decoder reads: UniMatch's feature perturbation
        # drops channels of exactly these (method/perturbation.py hooks them), not of layer1's input to layer2.
        self.low_level = nn.Identity()
        self.high_level = nn.Identity()
        self.aspp = ASPP(2048, 256, dilations)
        self.reduce = _conv_bn_relu(256, 48)
        self.fuse = nn.Sequential(_conv_bn_relu(256 + 48, 256, 3), _conv_bn_relu(256, 256, 3))
        self.classifier = nn.Conv2d(256, num_classes, 1)

    def encoder_parameters(self):
        return self.backbone.parameters()

    def head_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("backbone.")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        b = self.backbone
        x = b.maxpool(b.act(b.bn1(b.conv1(x))))
        c1 = b.layer1(x)
        c4 = b.layer4(b.layer3(b.layer2(c1)))
        c1, c4 = self.low_level(c1), self.high_level(c4)
        high = F.interpolate(self.aspp(c4), size=c1.shape[2:], mode="bilinear", align_corners=True)
        out = self.classifier(self.fuse(torch.cat([high, self.reduce(c1)], dim=1)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=True)


def load_pretrained(model: DeepLabV3Plus, path: Path) -> tuple[list[str], list[str]]:
    """Load an ImageNet ResNet state dict (torchvision key names) into the encoder.

    Accepts a bare state dict or one wrapped as {"state_dict": ...} / {"model": ...}, with an optional
    "module." or "backbone." prefix. The classifier ("fc.*") is expected to be unused. Returns
    (missing, unexpected) key lists; a file that fits nothing, or whose shapes differ, is a UserError.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.pretrained: {path} not found")
    from maskmatch_med.engine.checkpoint import read_torch_file  # lazily: the engine imports the networks

    try:
        state = read_torch_file(path)  # weights_only, and a refusal that never advises loading it unchecked
    except UserError as error:
        raise UserError(f"model.pretrained: {error}") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"model.pretrained: {path} is not a state dict of tensors")
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = model.backbone.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise UserError(
            f"model.pretrained: {path}: {len(wrong)} tensors have the wrong shape for {type(model).__name__}, "
            f"e.g. {wrong[0]} {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)} (another backbone?)"
        )
    if not any(k in own for k in state):
        raise UserError(f"model.pretrained: {path}: no key matches a ResNet encoder (e.g. {next(iter(state), 'none')!r})")
    result = model.backbone.load_state_dict(state, strict=False)
    # BatchNorm step counters are absent from older torchvision files and carry no weights.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    return missing, list(result.unexpected_keys)


def build_deeplabv3plus(config, in_channels: int, num_classes: int) -> DeepLabV3Plus:
    """From a ModelConfig: the network, with the ImageNet encoder loaded when model.pretrained is set."""
    model = DeepLabV3Plus(num_classes, backbone=config.backbone, in_channels=in_channels)
    if config.pretrained is not None:
        missing, unexpected = load_pretrained(model, config.pretrained)
        report = f"model.pretrained: loaded {config.pretrained}"
        report += f"; missing keys ({len(missing)}): {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}" if missing else "; no missing keys"
        report += f"; unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}" if unexpected else ""
        print(report)
    return model
