"""Accel (Jain et al., CVPR 2019): a warped reference branch corrected by a cheap update branch.

* Reference branch: a DFF over a large segmentor. On key frames its feature network runs;
  on every other frame its features are warped from the previous frame to the current one
  (propagated frame to frame, as Accel does, unlike DFF's direct key-to-current warp) and
  its task head gives score map s_ref. The warp uses the flow alone: the official symbols
  (``SamvitJ/Accel`` ``accel_18.py``, train and current-frame test alike) compute DFF's
  scale map but never apply it.
* Update branch: a small image segmentor on the current frame, score map s_upd.
* Corrective fusion: a 1x1 conv over [s_ref; s_upd] (2C -> C). It is initialised to pass
  s_ref through (identity on the reference half, zero on the update half), so an untrained
  Accel is its DFF.

A key frame is the reference network's own prediction (the official ``get_key_test_symbol``
runs neither the update branch nor the fusion there). On every other frame both branches run
and their scores are fused at 1/4 of the frame (the finest resolution either head predicts at;
fusing 124 classes at full resolution would cost more than the update branch) and upsampled.

Training (Accel Sec. 4, and the official ``get_train_symbol``): a clip of T consecutive frames
(T = KEY_INTERVAL); the reference features of its first frame are warped frame to frame through
the other T-1, by the same :meth:`propagate` that inference uses, and the cross-entropy of the
fused scores on the last frame trains the update segmentor and the fusion. The reference branch
is a trained DFF and stays frozen. (The official Cityscapes config also freezes the update
network, training the fusion alone; vssbench trains the update segmentor too, which on the
synthetic set starts from its own per-frame training.)

Presets (reference + update): ``r101+r50`` and ``swin-b+swin-t`` over Mask2Former (MPVSS
Table 2), ``r101+r18`` over DeepLab (Accel's own setting), ``tiny`` (DFF over SegFormer-tiny
+ PSPNet-tiny).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import VideoMethod, build_method, register_method
from vssbench.methods.dff import DFF
from vssbench.methods.perframe import PerFrame
from vssbench.methods.segmentors import cross_entropy

FUSION_STRIDE = 4


@register_method("accel")
class Accel(VideoMethod):
    """DFF reference scores fused with a small per-frame segmentor's scores."""

    presets = {
        "r101+r50": dict(reference="mask2former-r101", update="mask2former-r50"),
        "swin-b+swin-t": dict(reference="mask2former-swin-b", update="mask2former-swin-t"),
        "r101+r18": dict(reference="r101", update="deeplab-r18"),
        "tiny": dict(reference="tiny", update="pspnet-tiny"),
    }
    default_preset = "tiny"

    def __init__(self, preset: str, variant: str, num_classes: int, reference: str, update: str) -> None:
        super().__init__(preset, variant, num_classes)
        self.reference: DFF = build_method(f"dff:{reference}", num_classes)  # type: ignore[assignment]
        self.update: PerFrame = build_method(f"perframe:{update}", num_classes)  # type: ignore[assignment]
        self.fusion = nn.Conv2d(2 * num_classes, num_classes, 1)
        with torch.no_grad():
            self.fusion.weight.zero_()
            self.fusion.weight[:, :num_classes, 0, 0].copy_(torch.eye(num_classes))
            self.fusion.bias.zero_()
        self.reference.requires_grad_(False)
        self.update.requires_grad_(True)
        self._previous: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    @property
    def segmentor_preset(self) -> str:
        """The reference network's segmentor: the per-frame model that Accel accelerates."""
        return self.reference.segmentor_preset

    def component_methods(self) -> dict[str, VideoMethod]:
        return {"reference": self.reference, "update": self.update}

    def weight_components(self) -> dict[str, str]:
        return {"segmentor": "reference.segmentor", "update": "update.segmentor",
                "flow": "reference.feature_flow.flownet"}

    def reset(self) -> None:
        self._previous = None

    def fuse(self, reference_features: list[torch.Tensor], frame: torch.Tensor) -> torch.Tensor:
        """Both branches' scores at 1/4 of ``frame``, fused (C channels at 1/4)."""
        size = (frame.shape[-2] // FUSION_STRIDE, frame.shape[-1] // FUSION_STRIDE)
        image_size = frame.shape[-2:]
        reference_scores = self.reference.segmentor.decode(reference_features, size, image_size)
        update_scores = self.update.segmentor.decode(self.update.segmentor.extract(frame), size, image_size)
        return self.fusion(torch.cat([reference_scores, update_scores], 1))

    def propagate(self, features: list[torch.Tensor], frame: torch.Tensor,
                  previous_frame: torch.Tensor) -> list[torch.Tensor]:
        """One link of the chain: the previous frame's reference features warped to ``frame``."""
        return self.reference.feature_flow.warp(features, frame, previous_frame)

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        if is_key or self._previous is None:  # the reference network's own prediction, as the official key path
            features = self.reference.segmentor.extract(frame)
            self._previous = (frame, features)
            return self.reference.segmentor.decode(features, frame.shape[-2:])
        features = self.propagate(self._previous[1], frame, self._previous[0])
        self._previous = (frame, features)
        fused = self.fuse(features, frame)
        return F.interpolate(fused, size=frame.shape[-2:], mode="bilinear", align_corners=False)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames = batch["frames"]  # (B, T, 3, H, W): the key frame, then the T-1 frames it is propagated to
        features = self.reference.segmentor.extract(frames[:, 0])
        for index in range(1, frames.shape[1]):
            features = self.propagate(features, frames[:, index], frames[:, index - 1])
        return {"cross_entropy": cross_entropy(self.fuse(features, frames[:, -1]), batch["labels"][:, -1])}

    def loss_terms(self) -> tuple[str, ...]:
        return ("cross_entropy",)
