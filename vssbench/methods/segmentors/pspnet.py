"""PSPNet (Zhao et al., CVPR 2017) and the DeepLab network of DFF and Accel, over a dilated ResNet.

* :class:`DilatedResNet`: a ResNet with a deep stem (three 3x3 convs, mmseg's ResNetV1c) whose
  late stages trade stride for dilation: output stride 8 (last two stages dilated 2 and 4, as
  PSPNet) or 16 (last stage dilated 2, as DeepLab in DFF). ``style`` says how a dilated stage
  dilates: ``"mmseg"`` as mmsegmentation's ResNetV1c with ``contract_dilation=True`` (the first
  block of a dilated stage at half the stage's dilation; a basic block's second conv never
  dilated), so that mmseg's PSPNet weights compute what mmseg computes; ``"deeplab"`` dilates
  every 3x3 conv of the stage fully, as DFF's ResNet-101 does in res5; ``"semseg"`` as hszhao/semseg's
  PSPNet (which DCFM's ResNet encoders are): every bottleneck's 3x3 conv fully dilated, a basic
  block's second conv dilated and its first not. ``stem`` ``"7x7"`` is torchvision's ResNet-18 stem
  (one 7x7 conv, as semseg's ``deep_base=False``).
* :class:`PyramidPooling`: the map and its average pools at bins 1, 2, 3, 6 (each a 1x1 conv, batch
  norm, ReLU, upsampled back), concatenated: PSPNet's pyramid pooling module.
* :class:`PSPNet`: pyramid pooling with bins 1, 2, 3, 6 over the stride-8 map, a 3x3 conv and
  the classifier (mmseg's PSPHead). The auxiliary FCN head used only in training is left
  out, so cost is that of inference.
* :class:`DeepLab`: DFF's feature network (the stride-16 ResNet and a randomly initialised
  3x3 conv, dilation 6, to 1024 channels with ReLU) and a 1x1 classifier as the task head.

Weights: mmsegmentation PSPNet checkpoints (``pspnet_r18/r50/r101-d8``; :func:`from_mmseg`) and
mmseg/mmcls ResNetV1c ImageNet checkpoints (``resnet*_v1c``; :func:`backbone_from_resnet_v1c`).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors.base import ImageSegmentor, conv_bn_relu, cross_entropy


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int, second: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, second, second, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int, second: int) -> None:
        super().__init__()  # ``second`` (a basic block's second conv) has no counterpart: one 3x3 conv here
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if in_channels == out_channels and stride == 1:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class DilatedResNet(nn.Module):
    """A deep-stem ResNet at output stride 8 or 16 (module docstring)."""

    def __init__(self, block: str, depths: list[int], widths: list[int], stem_width: int,
                 output_stride: int = 8, style: str = "mmseg", stem: str = "deep") -> None:
        super().__init__()
        if style not in ("mmseg", "deeplab", "semseg"):
            raise ValueError(f"unknown dilation style {style!r}; expected 'mmseg', 'deeplab' or 'semseg'")
        block_cls = {"basic": _BasicBlock, "bottleneck": _Bottleneck}[block]
        if stem == "deep":
            self.stem = nn.Sequential(
                conv_bn_relu(3, stem_width // 2, 3, 2),
                conv_bn_relu(stem_width // 2, stem_width // 2, 3),
                conv_bn_relu(stem_width // 2, stem_width, 3),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "7x7":
            self.stem = nn.Sequential(conv_bn_relu(3, stem_width, 7, 2), nn.MaxPool2d(3, 2, 1))
        else:
            raise ValueError(f"unknown stem {stem!r}; expected 'deep' or '7x7'")
        strides, dilations = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2))}[output_stride]
        in_channels, stages = stem_width, []
        for depth, width, stride, dilation in zip(depths, widths, strides, dilations):
            blocks = []
            for index in range(depth):
                contract = style == "mmseg" and index == 0 and dilation > 1
                d = dilation // 2 if contract else dilation
                first, second = {"mmseg": (d, 1), "deeplab": (d, d),
                                 "semseg": (1, d) if block == "basic" else (d, d)}[style]
                blocks.append(block_cls(in_channels, width, stride if index == 0 else 1, first, second))
                in_channels = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: the map and, per bin, its average pool (1x1 conv, batch norm, ReLU)
    upsampled back, concatenated: ``in_channels + len(bins) * channels`` channels."""

    def __init__(self, in_channels: int, channels: int, bins: tuple[int, ...] = (1, 2, 3, 6),
                 align_corners: bool = False) -> None:
        super().__init__()
        self.align_corners = align_corners  # mmseg's PSPHead: False; hszhao/semseg's PPM: True
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(in_channels, channels, 1)) for b in bins
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(F.interpolate(branch(x), size=size, mode="bilinear", align_corners=self.align_corners)
                               for branch in self.branches)], 1)


class PyramidPoolingHead(PyramidPooling):
    """PSPNet's head (mmseg's PSPHead): pyramid pooling, a 3x3 conv, the classifier."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__(in_channels, channels, bins)
        self.bottleneck = conv_bn_relu(in_channels + len(bins) * channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.bottleneck(super().forward(x))))


class SingleMapSegmentor(ImageSegmentor):
    """A feature network that gives one map and a head module on it (PSPNet, DeepLab); the
    head's logits are upsampled bilinearly to the requested size."""

    head: nn.Module
    head_modules = ("head",)
    backbone_path = "backbone"
    classifier_prefixes = ("head.classifier.",)

    def __init__(self, num_classes: int, feature_channels: int) -> None:
        super().__init__(num_classes)
        self._feature_channels = feature_channels

    @abc.abstractmethod
    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> the one feature map."""

    @property
    def feature_channels(self) -> list[int]:
        return [self._feature_channels]

    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        return [self.feature_map(image)]

    def decode(self, features: list[torch.Tensor], size: tuple[int, int],
               image_size: tuple[int, int] | None = None) -> torch.Tensor:
        return F.interpolate(self.head(features[0]), size=size, mode="bilinear", align_corners=False)

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cross_entropy": cross_entropy(self.head(features[0]), label)}


class PSPNet(SingleMapSegmentor):
    """PSPNet over a dilated ResNet; features = the last backbone stage at stride 8."""

    revision: ClassVar[int] = 2  # 2: mmseg's ResNetV1c dilation (contract_dilation; basic blocks' conv2 undilated)

    def __init__(self, num_classes: int, block: str, depths: list[int], widths: list[int], stem_width: int,
                 head_channels: int) -> None:
        backbone = DilatedResNet(block, depths, widths, stem_width, style="mmseg")
        super().__init__(num_classes, backbone.out_channels)
        self.backbone = backbone
        self.head = PyramidPoolingHead(backbone.out_channels, head_channels, num_classes)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)


class DeepLab(SingleMapSegmentor):
    """The DeepLab network of DFF and Accel: a dilated ResNet at output stride 16 and a
    randomly initialised 3x3 conv (dilation 6) to 1024 channels with ReLU form the feature
    network; the task head is a 1x1 classifier. The split follows DFF's code, which caches
    and warps the 1024-channel map."""

    classifier_prefixes = ("head.",)

    def __init__(self, num_classes: int, block: str, depths: list[int], widths: list[int], stem_width: int,
                 feature_channels: int) -> None:
        super().__init__(num_classes, feature_channels)
        self.backbone = DilatedResNet(block, depths, widths, stem_width, output_stride=16, style="deeplab")
        self.feature_conv = nn.Sequential(
            nn.Conv2d(self.backbone.out_channels, feature_channels, 3, padding=6, dilation=6), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(feature_channels, num_classes, 1)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.feature_conv(self.backbone(image))


_RESNET = {  # the dilated ResNets of the PSPNet and DeepLab presets
    "r18": dict(block="basic", depths=[2, 2, 2, 2], widths=[64, 128, 256, 512], stem_width=64),
    "r50": dict(block="bottleneck", depths=[3, 4, 6, 3], widths=[64, 128, 256, 512], stem_width=64),
    "r101": dict(block="bottleneck", depths=[3, 4, 23, 3], widths=[64, 128, 256, 512], stem_width=64),
    "tiny": dict(block="basic", depths=[1, 1, 1, 1], widths=[16, 32, 64, 128], stem_width=16),
}
PSPNET_PRESETS = {
    # mmseg's pspnet_r18-d8 (head 128 channels) and pspnet_r50/r101-d8 (head 512 channels).
    "pspnet-r18": dict(**_RESNET["r18"], head_channels=128),
    "pspnet-r50": dict(**_RESNET["r50"], head_channels=512),
    "pspnet-r101": dict(**_RESNET["r101"], head_channels=512),
    "pspnet-tiny": dict(**_RESNET["tiny"], head_channels=32),
}
DEEPLAB_PRESETS = {
    **{f"deeplab-{depth}": dict(**_RESNET[depth], feature_channels=1024) for depth in ("r18", "r50", "r101")},
    "deeplab-tiny": dict(**_RESNET["tiny"], feature_channels=64),
}


# --------------------------------------------------------------------------- weights

# mmseg's ResNetV1c: stem.{0,1,3,4,6,7} = conv, bn of the three stem convs; layerN.i with
# downsample.{0,1}; ours: stem.{0,1,2}.{0,1} and stages.{N-1}.i with shortcut.{0,1}.
RESNET_V1C_RULES = [
    (r"^stem\.0\.", "stem.0.0."), (r"^stem\.1\.", "stem.0.1."),
    (r"^stem\.3\.", "stem.1.0."), (r"^stem\.4\.", "stem.1.1."),
    (r"^stem\.6\.", "stem.2.0."), (r"^stem\.7\.", "stem.2.1."),
    (r"^layer(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
    (r"\.downsample\.", ".shortcut."),
]


def backbone_from_resnet_v1c(state: dict[str, torch.Tensor]) -> Converted:
    """An mmseg/mmcls ResNetV1c state dict (``open-mmlab://resnet50_v1c``) -> :class:`DilatedResNet`."""
    return rename(state, RESNET_V1C_RULES, drop={r"^fc\.": "ImageNet classifier"})


def from_mmseg(state: dict[str, torch.Tensor]) -> Converted:
    """An mmsegmentation PSPNet (``backbone`` ResNetV1c, ``decode_head`` PSPHead) -> :class:`PSPNet`."""
    backbone = backbone_from_resnet_v1c(strip_prefix(state, "backbone."))
    head = rename(strip_prefix(state, "decode_head."), [
        (r"^psp_modules\.(\d+)\.1\.conv\.", r"branches.\1.1.0."),
        (r"^psp_modules\.(\d+)\.1\.bn\.", r"branches.\1.1.1."),
        (r"^bottleneck\.conv\.", "bottleneck.0."),
        (r"^bottleneck\.bn\.", "bottleneck.1."),
        (r"^conv_seg\.", "classifier."),
    ])
    converted = Converted({**{f"backbone.{k}": v for k, v in backbone.state.items()},
                           **{f"head.{k}": v for k, v in head.state.items()}}, dropped=backbone.dropped)
    auxiliary = [key for key in state if key.startswith("auxiliary_head.")]
    if auxiliary:
        converted.dropped["auxiliary FCN head (training only)"] = auxiliary
    others = [k for k in state if not k.startswith(("backbone.", "decode_head.", "auxiliary_head."))]
    converted.state.update({k: state[k] for k in others})  # reported as unexpected by the loader
    return converted
