"""Temporal smoothing: a per-frame segmentor whose class probabilities are averaged over time.

p_t = a * softmax(s_t) + (1 - a) * p_{t-1}, p_0 = softmax(s_0), where s_t are the segmentor's scores on
frame t and a the weight of the current frame (the variant: ``ema-0.5``, ``ema-0.8``). It runs the
segmentor on every frame, so the key-frame interval does not apply and it costs what the per-frame
segmentor costs; what it may buy is temporal consistency (mVC). It trains nothing of its own: its
weights are its segmentor's, which ``bench run`` trains on the synthetic set as for ``perframe``.

Everything it uses from vssbench is the public API of docs/your-method.md: ``VideoMethod``,
``register_method``, ``build_segmentor`` and ``SEGMENTORS``.
"""

from __future__ import annotations

import torch

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.segmentors import SEGMENTORS, build_segmentor


@register_method("smooth")
class TemporalSmoothing(VideoMethod):
    """A per-frame segmentor's class probabilities averaged over time (an exponential moving average)."""

    presets = {name: {} for name in SEGMENTORS}  # any segmentor vssbench has
    default_preset = "segformer-tiny"
    # Variants are data: each name maps to the weight of the current frame; the first is the default.
    weights = {"ema-0.5": 0.5, "ema-0.8": 0.8}
    variants = tuple(weights)
    uses_key_frames = False
    has_own_training_stage = False

    def __init__(self, preset: str, variant: str, num_classes: int) -> None:
        super().__init__(preset, variant, num_classes)
        self.segmentor = build_segmentor(preset, num_classes)
        self.weight = self.weights[variant]
        self._smoothed: torch.Tensor | None = None

    @property
    def segmentor_preset(self) -> str:
        return self.preset

    def reset(self) -> None:
        self._smoothed = None

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        probabilities = self.segmentor(frame).softmax(1)
        if self._smoothed is None:
            self._smoothed = probabilities
        else:
            self._smoothed = self.weight * probabilities + (1 - self.weight) * self._smoothed
        return self._smoothed

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Its training is its segmentor's, on single frames."""
        return self.segmentor.loss(batch["frames"].flatten(0, 1), batch["labels"].flatten(0, 1))
