"""The two image-segmentor baselines every video method is compared with.

* ``perframe``: the segmentor on every frame; the key-frame interval does not apply.
* ``copy``: the segmentor on key frames only; each non-key frame reuses the key frame's
  prediction unchanged (MPVSS Table 3, row "copy"). It is the floor any propagation
  method must beat at the same interval.

Both train nothing of their own: their training stage is the segmentor's (their recipes are
those of the segmentor's family, ``vssbench/recipes/perframe.yaml``).
"""

from __future__ import annotations

import torch

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.segmentors import SEGMENTORS, build_segmentor


class _SegmentorMethod(VideoMethod):
    """A method whose only module is an image segmentor named by its preset."""

    presets = {name: {} for name in SEGMENTORS}
    default_preset = "segformer-tiny"
    has_own_training_stage = False

    def __init__(self, preset: str, variant: str, num_classes: int) -> None:
        super().__init__(preset, variant, num_classes)
        self.segmentor = build_segmentor(preset, num_classes)

    @property
    def segmentor_preset(self) -> str:
        return self.preset

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames, labels = batch["frames"].flatten(0, 1), batch["labels"].flatten(0, 1)
        return self.segmentor.loss(frames, labels)

    def loss_terms(self) -> tuple[str, ...]:
        return self.segmentor.loss_terms


@register_method("perframe")
class PerFrame(_SegmentorMethod):
    """The image segmentor applied independently to every frame."""

    uses_key_frames = False

    def reset(self) -> None:
        pass

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        return self.segmentor(frame)


@register_method("copy")
class KeyFrameCopy(_SegmentorMethod):
    """The key frame's scores reused on every frame until the next key frame."""

    def __init__(self, preset: str, variant: str, num_classes: int) -> None:
        super().__init__(preset, variant, num_classes)
        self._key_scores: torch.Tensor | None = None

    def reset(self) -> None:
        self._key_scores = None

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        if is_key or self._key_scores is None:
            self._key_scores = self.segmentor(frame)
        return self._key_scores
