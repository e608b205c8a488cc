"""The image-segmentor interface every video method builds on, and the pieces its models share."""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.datasets.base import IGNORE_INDEX


class ImageSegmentor(nn.Module, abc.ABC):
    """A per-frame segmentor split into a feature network and a task head.

    ``extract(image)`` runs the feature network and returns a list of feature maps;
    ``decode(features, size)`` runs the task head and returns class scores (B, C, H, W) at
    ``size``. Video methods reuse, warp or mix the features between the two calls.

    Every segmentor takes frames normalised with the ImageNet mean and std in RGB order
    (:mod:`vssbench.datasets.transforms`), the convention of every weight format vssbench
    loads for it (mmsegmentation, NVlabs, detectron2's Mask2Former configs, Hugging Face).
    """

    # Attribute path of the ImageNet-pretrainable feature extractor (``--init backbone=PATH``).
    backbone_path: ClassVar[str]
    # Parameter name prefixes whose shape depends on the class count (``--reinit-classifier``).
    classifier_prefixes: ClassVar[tuple[str, ...]]
    classifier_extra_outputs: ClassVar[int] = 0  # classifier outputs beyond one per class (Mask2Former's "no object")
    head_modules: ClassVar[tuple[str, ...]] = ()  # attribute paths of the task head (what DFF trains with its flow)
    loss_terms: ClassVar[tuple[str, ...]] = ("cross_entropy",)  # the names ``head_loss`` returns, unweighted
    # Bumped whenever the computation of a preset changes for the same weights, so that checkpoints
    # written before the change are refused instead of silently computing another network.
    revision: ClassVar[int] = 1
    # Inputs are zero-padded (bottom, right) to a multiple of this before the feature network, as the
    # segmentor's source pads them (Mask2Former: 32); video methods that warp its features pad their
    # flow input alike, so that flow and features cover the same area.
    size_divisibility: ClassVar[int] = 1
    preset: str | None = None  # the preset name it was built from (build_segmentor sets it)

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    @abc.abstractmethod
    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> feature maps, finest first."""

    @abc.abstractmethod
    def decode(self, features: list[torch.Tensor], size: tuple[int, int],
               image_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Feature maps -> class scores (B, C, *size).

        ``image_size`` is the size of the frame the features come from when ``size`` is another
        (default ``size``): a segmentor that pads its input crops the padding against it."""

    @abc.abstractmethod
    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmentor's own training objective for the task head on given features and (B, H, W) labels:
        the terms of :attr:`loss_terms`, unweighted (a recipe's ``loss_weights`` weight them)."""

    @property
    @abc.abstractmethod
    def feature_channels(self) -> list[int]:
        """Channels of each map ``extract`` returns."""

    def loss(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """The segmentor's own training objective on (B, 3, H, W) images and (B, H, W) labels."""
        return self.head_loss(self.extract(image), label)

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for path in self.head_modules for p in self.get_submodule(path).parameters()]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode(self.extract(image), image.shape[-2:])


def cross_entropy(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy, logits upsampled to the label size, 255 ignored; 0 (with a gradient of 0)
    where no pixel is labelled, as on the unlabelled frames of a Cityscapes training sample."""
    if logits.shape[-2:] != label.shape[-2:]:
        logits = F.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    if not (label != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, label, ignore_index=IGNORE_INDEX)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias), batch norm and ReLU, as mmcv's ConvModule with a BN norm."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right so that H and W are multiples of ``multiple``."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image
