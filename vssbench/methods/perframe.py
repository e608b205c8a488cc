"""The two image-segmentor baselines every video method is compared with.

* ``perframe``: the segmentor on every frame; the key-frame interval does not apply.
* ``copy``: the segmentor on key frames only; each non-key frame reuses the key frame's
  prediction unchanged (MPVSS Table 3, row "copy"). It is the floor any propagation
  method must beat at the same interval.

Both train nothing of their own: their training stage is the segmentor's.
"""

from __future__ import annotations


import torch

from vssbench.methods.base import TrainingRecipe, VideoMethod, register_method
from vssbench.methods.segmentors import SEGMENTORS, build_segmentor

# By segmentor family, the prefix of the preset name. Every family gets 1800 iterations: a
# video method's stage that fine-tunes its segmentor must not gain accuracy from training the
# per-frame baseline never had. At 600 iterations SegFormer-tiny reached 91.19 mIoU (seed 0),
# at 1200 96.14, at 1800 97.02, and TFC variants that fine-tune it 600 more beat it by 3 points
# at k=1; Mask2Former-tiny reached 70.7-80.5 over seeds 0-2 after 600, 82.7-91.7 after 1800.
SEGMENTOR_RECIPES = {
    "segformer": TrainingRecipe(iterations=1800, batch_size=8, learning_rate=2e-3),
    "mask2former": TrainingRecipe(iterations=1800, batch_size=8, learning_rate=1e-3),
    "pspnet": TrainingRecipe(iterations=1800, batch_size=8, learning_rate=2e-3),
    "deeplab": TrainingRecipe(iterations=1800, batch_size=8, learning_rate=2e-3),
}


def segmentor_recipe(preset: str) -> TrainingRecipe:
    """The synthetic training schedule of an image segmentor preset."""
    return SEGMENTOR_RECIPES[preset.split("-")[0]]


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

    @property
    def recipe(self) -> TrainingRecipe:  # type: ignore[override]
        return segmentor_recipe(self.preset)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames, labels = batch["frames"].flatten(0, 1), batch["labels"].flatten(0, 1)
        return self.segmentor.loss(frames, labels)


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
