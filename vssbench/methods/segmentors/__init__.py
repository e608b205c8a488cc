"""Image segmentors with an extract/decode split, built from configs with random init.

One file per model family, each with its presets and the key maps of the weight formats it
comes in: :mod:`.segformer` (SegFormer, Hugging Face's MiT with the paper's or mmseg's head),
:mod:`.mask2former` (Mask2Former over ResNet or Swin), :mod:`.pspnet` (PSPNet and DFF's
DeepLab over a dilated ResNet). :func:`build_segmentor` builds any of them by preset name.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers.utils import logging as hf_logging

from vssbench.methods.segmentors.base import ImageSegmentor, cross_entropy
from vssbench.methods.segmentors.mask2former import (
    MASK2FORMER_PRESETS,
    Mask2Former,
    Mask2FormerOutput,
    semantic_from_masks,
    semantic_to_set_targets,
)
from vssbench.methods.segmentors.pspnet import DEEPLAB_PRESETS, PSPNET_PRESETS, DeepLab, PSPNet, SingleMapSegmentor
from vssbench.methods.segmentors.segformer import SEGFORMER_PRESETS, SegFormer

hf_logging.set_verbosity_error()  # silence "resnet backbone not officially supported" notices

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
    segmentor = cls(num_classes, **config)
    segmentor.preset = preset
    return segmentor


__all__ = [
    "SEGMENTORS", "DeepLab", "ImageSegmentor", "Mask2Former", "Mask2FormerOutput", "PSPNet", "SegFormer",
    "SingleMapSegmentor", "build_segmentor", "cross_entropy", "semantic_from_masks", "semantic_to_set_targets",
]
