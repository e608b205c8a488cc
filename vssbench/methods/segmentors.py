"""Image segmentors with an extract/decode split, built from configs with random init.

``extract(image)`` runs the feature network and returns a list of feature maps;
``decode(features, size)`` runs the task head and returns class scores (B, C, H, W) at
``size``. Video methods reuse, warp or mix the features between the two calls.

* SegFormer (Xie et al., NeurIPS 2021): Hugging Face ``SegformerForSemanticSegmentation``;
  features = the four MiT stage outputs, head = the all-MLP decoder.
* Mask2Former (Cheng et al., CVPR 2022): Hugging Face ``Mask2FormerForUniversalSegmentation``
  with a ResNet or Swin backbone; features = the pixel decoder's mask features and its
  three multi-scale maps, head = the masked-attention transformer decoder. Semantic
  scores follow detectron2's ``semantic_inference``: softmax class probabilities (minus
  "no object") times sigmoid masks upsampled to the image, summed over queries.
* PSPNet (Zhao et al., CVPR 2017): written here; dilated ResNet (output stride 8,
  mmseg's ResNetV1c deep stem), pyramid pooling with bins 1, 2, 3, 6. The auxiliary
  FCN head used only in training is left out, so cost is that of inference.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    ResNetConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SwinConfig,
)
from transformers.utils import logging as hf_logging

from vssbench.datasets.base import IGNORE_INDEX

hf_logging.set_verbosity_error()  # silence "resnet backbone not officially supported" notices


class ImageSegmentor(nn.Module, abc.ABC):
    """A per-frame segmentor split into a feature network and a task head."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    @abc.abstractmethod
    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> feature maps, finest first."""

    @abc.abstractmethod
    def decode(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Feature maps -> class scores (B, C, *size)."""

    @abc.abstractmethod
    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmentor's own training objective for the task head on given features and (B, H, W) labels."""

    @property
    @abc.abstractmethod
    def feature_channels(self) -> list[int]:
        """Channels of each map ``extract`` returns."""

    head_modules: tuple[str, ...] = ()  # attribute paths of the task head (what DFF trains with its flow)

    def loss(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmentor's own training objective on (B, 3, H, W) images and (B, H, W) labels."""
        return self.head_loss(self.extract(image), label)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for path in self.head_modules for p in self.get_submodule(path).parameters()]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.extract(image), image.shape[-2:])


def cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy, logits upsampled to the label size, 255 ignored."""
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)


# --------------------------------------------------------------------------- SegFormer


class SegFormer(ImageSegmentor):
    """SegFormer: a MiT encoder (4 stages at strides 4, 8, 16, 32) and an all-MLP decoder."""

    def __init__(self, num_classes: int, **config: object) -> None:
        super().__init__(num_classes)
        self.config = SegformerConfig(num_labels=num_classes, **config)
        self.model = SegformerForSemanticSegmentation(self.config)

    def extract_stages(self, image: torch.Tensor, stages: int = 4) -> list[torch.Tensor]:
        """The first ``stages`` encoder stage outputs (TFC runs stages 1-2 alone)."""
        features, hidden = [], image
        for stage in self.model.segformer.stages[:stages]:
            hidden = stage(hidden)
            features.append(hidden)
        return features

    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.extract_stages(image)

    def decode(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        logits = self.model.decode_head(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    head_modules = ("model.decode_head",)

    @property
    def feature_channels(self) -> list[int]:
        return list(self.config.hidden_sizes)

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cross_entropy": cross_entropy(self.model.decode_head(features), label)}


_MIT_HEADS = dict(num_attention_heads=[1, 2, 5, 8])
SEGFORMER_PRESETS = {
    # MiT-B0..B5 as in the SegFormer paper; decoder width 256 for B0/B1, 768 otherwise.
    "segformer-b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], decoder_hidden_size=256, **_MIT_HEADS),
    "segformer-b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], decoder_hidden_size=256, **_MIT_HEADS),
    "segformer-b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], decoder_hidden_size=768, **_MIT_HEADS),
    "segformer-b3": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], decoder_hidden_size=768, **_MIT_HEADS),
    "segformer-b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], decoder_hidden_size=768, **_MIT_HEADS),
    "segformer-b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], decoder_hidden_size=768, **_MIT_HEADS),
    "segformer-tiny": dict(
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4],
        decoder_hidden_size=64, classifier_dropout_prob=0.0, drop_path_rate=0.0,
    ),
}


# --------------------------------------------------------------------------- Mask2Former


@dataclass
class Mask2FormerOutput:
    """Everything Mask2Former's head produces for one batch (last decoder layer unless noted)."""

    semantic: torch.Tensor  # (B, C, H, W) semantic scores at the requested size
    class_logits: torch.Tensor  # (B, Q, C + 1), the last class is "no object"
    mask_logits: torch.Tensor  # (B, Q, H/4, W/4)
    query_embeddings: torch.Tensor  # (B, Q, D) decoder output of the last layer
    class_logits_per_layer: tuple[torch.Tensor, ...]  # every layer, for the deep-supervised set loss
    mask_logits_per_layer: tuple[torch.Tensor, ...]


class Mask2Former(ImageSegmentor):
    """Mask2Former: backbone + multi-scale deformable pixel decoder + masked-attention decoder."""

    def __init__(self, num_classes: int, backbone: dict, **config: object) -> None:
        super().__init__(num_classes)
        backbone = dict(backbone)
        backbone_type = backbone.pop("type")
        out_features = ["stage1", "stage2", "stage3", "stage4"]
        backbone_config = (
            ResNetConfig(out_features=out_features, **backbone)
            if backbone_type == "resnet"
            else SwinConfig(out_features=out_features, **backbone)
        )
        self.config = Mask2FormerConfig(backbone_config=backbone_config, num_labels=num_classes, **config)
        self.model = Mask2FormerForUniversalSegmentation(self.config)

    @property
    def learned_queries(self) -> torch.Tensor:
        """The decoder's N learned query features (Q, D), which MPVSS uses to initialise flow queries."""
        return self.model.model.transformer_module.queries_features.weight

    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        pixel_level = self.model.model.pixel_level_module(image)
        # [mask features (1/4), multi-scale maps (1/32, 1/16, 1/8)]
        return [pixel_level.decoder_last_hidden_state, *pixel_level.decoder_hidden_states]

    def decode_queries(self, features: list[torch.Tensor], size: tuple[int, int]) -> Mask2FormerOutput:
        mask_features, multi_scale = features[0], list(features[1:])
        decoded = self.model.model.transformer_module(
            multi_scale_features=multi_scale, mask_features=mask_features, output_hidden_states=True
        )
        class_logits = tuple(self.model.class_predictor(h.transpose(0, 1)) for h in decoded.intermediate_hidden_states)
        masks = tuple(decoded.masks_queries_logits)
        return Mask2FormerOutput(
            semantic=semantic_from_masks(class_logits[-1], masks[-1], size),
            class_logits=class_logits[-1],
            mask_logits=masks[-1],
            query_embeddings=decoded.intermediate_hidden_states[-1].transpose(0, 1),
            class_logits_per_layer=class_logits,
            mask_logits_per_layer=masks,
        )

    def decode(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return self.decode_queries(features, size).semantic

    def set_loss(
        self,
        class_logits_per_layer: tuple[torch.Tensor, ...],
        mask_logits_per_layer: tuple[torch.Tensor, ...],
        label: torch.Tensor,
        weights: tuple[float, float, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mask2Former's Hungarian-matched set loss with deep supervision over every decoder layer.

        ``weights`` = (class, mask, dice); default the config's (2, 5, 5) as in Mask2Former.
        """
        class_weight, mask_weight, dice_weight = weights or (
            self.config.class_weight, self.config.mask_weight, self.config.dice_weight)
        mask_labels, class_labels = semantic_to_set_targets(label)
        auxiliary = [
            {"masks_queries_logits": masks, "class_queries_logits": classes}
            for masks, classes in zip(mask_logits_per_layer[:-1], class_logits_per_layer[:-1])
        ]
        terms = self.model.criterion(
            masks_queries_logits=mask_logits_per_layer[-1], class_queries_logits=class_logits_per_layer[-1],
            mask_labels=mask_labels, class_labels=class_labels, auxiliary_predictions=auxiliary,
        )
        return {
            "class": class_weight * sum(v for k, v in terms.items() if k.startswith("loss_cross_entropy")),
            "mask": mask_weight * sum(v for k, v in terms.items() if k.startswith("loss_mask")),
            "dice": dice_weight * sum(v for k, v in terms.items() if k.startswith("loss_dice")),
        }

    head_modules = ("model.model.transformer_module", "model.class_predictor")

    @property
    def feature_channels(self) -> list[int]:
        return [self.config.mask_feature_size] + [self.config.feature_size] * 3

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        output = self.decode_queries(features, label.shape[-2:])
        return self.set_loss(output.class_logits_per_layer, output.mask_logits_per_layer, label)


def semantic_from_masks(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """detectron2's semantic inference: sum_q softmax(class_q)[:C] * sigmoid(mask_q), at ``size``."""
    masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False).sigmoid()
    probabilities = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probabilities, masks)


def semantic_to_set_targets(label: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(B, H, W) label maps -> per image, one binary mask and one class id per present class."""
    mask_labels, class_labels = [], []
    for image_label in label:
        classes = image_label.unique()
        classes = classes[classes != IGNORE_INDEX]
        mask_labels.append((image_label[None] == classes[:, None, None]).float())
        class_labels.append(classes)
    return mask_labels, class_labels


_RESNET50 = dict(type="resnet", layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048])
_RESNET101 = dict(_RESNET50, depths=[3, 4, 23, 3])


def _swin(embed_dim: int, depths: list[int], heads: list[int], window: int = 7) -> dict:
    return dict(type="swin", embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window,
                drop_path_rate=0.3)


# Paper architecture: 100 queries, hidden 256, 8 heads, FFN 2048, 9 decoder layers (HF counts
# `decoder_layers` = 10 including the initial prediction), 6 deformable pixel-decoder layers.
_PAPER_DECODER = dict(num_queries=100, hidden_dim=256, num_attention_heads=8, dim_feedforward=2048,
                      decoder_layers=10, encoder_layers=6)
MASK2FORMER_PRESETS = {
    "mask2former-r50": dict(backbone=_RESNET50, **_PAPER_DECODER),
    "mask2former-r101": dict(backbone=_RESNET101, **_PAPER_DECODER),
    "mask2former-swin-t": dict(backbone=_swin(96, [2, 2, 6, 2], [3, 6, 12, 24]), **_PAPER_DECODER),
    "mask2former-swin-s": dict(backbone=_swin(96, [2, 2, 18, 2], [3, 6, 12, 24]), **_PAPER_DECODER),
    "mask2former-swin-b": dict(backbone=_swin(128, [2, 2, 18, 2], [4, 8, 16, 32], window=12), **_PAPER_DECODER),
    "mask2former-swin-l": dict(backbone=_swin(192, [2, 2, 18, 2], [6, 12, 24, 48], window=12), **_PAPER_DECODER),
    "mask2former-tiny": dict(
        backbone=dict(type="resnet", layer_type="basic", embedding_size=16, depths=[1, 1, 1, 1],
                      hidden_sizes=[16, 32, 64, 128]),
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64,
        encoder_layers=1, decoder_layers=3, num_attention_heads=2, num_queries=16, train_num_points=2048,
    ),
}


# --------------------------------------------------------------------------- PSPNet


class _BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = _shortcut(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int, dilation: int) -> None:
        super().__init__()
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


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class DilatedResNet(nn.Module):
    """ResNet with a deep stem and dilated late stages: output stride 8 (last two stages
    dilated 2 and 4, as PSPNet uses) or 16 (last stage dilated 2, as DeepLab in DFF)."""

    def __init__(self, block: str, depths: list[int], widths: list[int], stem_width: int,
                 output_stride: int = 8) -> None:
        super().__init__()
        block_cls = {"basic": _BasicBlock, "bottleneck": _Bottleneck}[block]
        self.stem = nn.Sequential(
            _conv_bn_relu(3, stem_width // 2, 3, 2),
            _conv_bn_relu(stem_width // 2, stem_width // 2, 3),
            _conv_bn_relu(stem_width // 2, stem_width, 3),
            nn.MaxPool2d(3, 2, 1),
        )
        strides, dilations = {8: ((1, 2, 1, 1), (1, 1, 2, 4)), 16: ((1, 2, 2, 1), (1, 1, 1, 2))}[output_stride]
        in_channels, stages = stem_width, []
        for depth, width, stride, dilation in zip(depths, widths, strides, dilations):
            blocks = []
            for index in range(depth):
                blocks.append(block_cls(in_channels, width, stride if index == 0 else 1, dilation))
                in_channels = width * block_cls.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class PyramidPoolingHead(nn.Module):
    """PSPNet's head: pooled context at bins (1, 2, 3, 6), concatenated, 3x3 conv, classifier."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, bins: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), _conv_bn_relu(in_channels, channels, 1)) for b in bins
        )
        self.bottleneck = _conv_bn_relu(in_channels + len(bins) * channels, channels, 3)
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size=size, mode="bilinear", align_corners=False) for branch in self.branches]
        return self.classifier(self.dropout(self.bottleneck(torch.cat([x, *pooled], 1))))


class SingleMapSegmentor(ImageSegmentor):
    """A feature network that gives one map and a head module on it (PSPNet, DeepLab); the
    head's logits are upsampled bilinearly to the requested size."""

    head: nn.Module
    head_modules = ("head",)

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

    def decode(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.head(features[0]), size=size, mode="bilinear", align_corners=False)

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cross_entropy": cross_entropy(self.head(features[0]), label)}


class PSPNet(SingleMapSegmentor):
    """PSPNet over a dilated ResNet; features = the last backbone stage at stride 8."""

    def __init__(self, num_classes: int, block: str, depths: list[int], widths: list[int], stem_width: int,
                 head_channels: int) -> None:
        backbone = DilatedResNet(block, depths, widths, stem_width)
        super().__init__(num_classes, backbone.out_channels)
        self.backbone = backbone
        self.head = PyramidPoolingHead(backbone.out_channels, head_channels, num_classes)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(image)


_RESNET = {  # the dilated ResNets of the PSPNet and DeepLab presets
    "r18": dict(block="basic", depths=[2, 2, 2, 2], widths=[64, 128, 256, 512], stem_width=64),
    "r50": dict(block="bottleneck", depths=[3, 4, 6, 3], widths=[64, 128, 256, 512], stem_width=64),
    "r101": dict(block="bottleneck", depths=[3, 4, 23, 3], widths=[64, 128, 256, 512], stem_width=64),
    "tiny": dict(block="basic", depths=[1, 1, 1, 1], widths=[16, 32, 64, 128], stem_width=16),
}
PSPNET_PRESETS = {
    # mmseg's pspnet_r18-d8 (head 128 channels) and pspnet_r101-d8 (head 512 channels).
    "pspnet-r18": dict(**_RESNET["r18"], head_channels=128),
    "pspnet-r101": dict(**_RESNET["r101"], head_channels=512),
    "pspnet-tiny": dict(**_RESNET["tiny"], head_channels=32),
}


# --------------------------------------------------------------------------- DeepLab (DFF, Accel)


class DeepLab(SingleMapSegmentor):
    """The DeepLab network of DFF and Accel: a dilated ResNet at output stride 16 and a
    randomly initialised 3x3 conv (dilation 6) to 1024 channels with ReLU form the feature
    network; the task head is a 1x1 classifier. The split follows DFF's code, which caches
    and warps the 1024-channel map."""

    def __init__(self, num_classes: int, block: str, depths: list[int], widths: list[int], stem_width: int,
                 feature_channels: int) -> None:
        super().__init__(num_classes, feature_channels)
        self.backbone = DilatedResNet(block, depths, widths, stem_width, output_stride=16)
        self.feature_conv = nn.Sequential(
            nn.Conv2d(self.backbone.out_channels, feature_channels, 3, padding=6, dilation=6), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(feature_channels, num_classes, 1)

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        return self.feature_conv(self.backbone(image))


DEEPLAB_PRESETS = {
    **{f"deeplab-{depth}": dict(**_RESNET[depth], feature_channels=1024) for depth in ("r18", "r50", "r101")},
    "deeplab-tiny": dict(**_RESNET["tiny"], feature_channels=64),
}


# --------------------------------------------------------------------------- registry

SEGMENTORS: dict[str, tuple[Callable[..., ImageSegmentor], dict]] = {
    **{name: (SegFormer, cfg) for name, cfg in SEGFORMER_PRESETS.items()},
    **{name: (Mask2Former, cfg) for name, cfg in MASK2FORMER_PRESETS.items()},
    **{name: (PSPNet, cfg) for name, cfg in PSPNET_PRESETS.items()},
    **{name: (DeepLab, cfg) for name, cfg in DEEPLAB_PRESETS.items()},
}


def build_segmentor(preset: str, num_classes: int) -> ImageSegmentor:
    """An image segmentor from its preset name, with random init."""
    if preset not in SEGMENTORS:
        raise ValueError(f"unknown segmentor preset {preset!r}; valid presets: {', '.join(SEGMENTORS)}")
    cls, config = SEGMENTORS[preset]
    return cls(num_classes, **config)
