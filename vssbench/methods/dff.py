"""DFF: deep feature flow (Zhu et al., CVPR 2017), over any segmentor's extract/decode split.

Key frame k: the feature network (the segmentor's ``extract``) runs and its maps are kept.
Frame t: FlowNetS on the (t, k) pair at half resolution gives the flow from t back to k and,
through a 1x1 conv on its finest decoder features, a scale field S with one channel per
feature channel (initialised weight 0 / bias 1, so S = 1 at the start of training). Each
key map is warped straight from k to t (never chained) with the flow resized to it and its
vectors rescaled, then multiplied by S resized to it; the task head (``decode``) runs on
every frame. With several feature maps (Mask2Former's pixel-decoder outputs, SegFormer's
four stages) each map gets its own scale conv.

Training (DFF Sec. 3.3): (key, current) pairs; the segmentor's own head loss on the current
frame's warped features (terms ``<term>_current``), plus the same loss on the key frame's own
features (``<term>_key``: the head decodes both at test time; without it the head drifts to
warped features only), each weighted by the recipe. The method's own setting, which the synthetic
recipe keeps, trains the flow network, the scale convs and the task head and freezes the feature
network (its batch-norm statistics too): on the synthetic set it is already trained per frame, and
the frozen network keeps k = 1 equal to the per-frame row. DFF itself trains end to end with only
conv1, res2 and the batch norms fixed; the paper recipes (``vssbench/recipes/dff.yaml``,
``cityscapes`` and ``vspw``) do that through their ``trainable`` rules, and then the gradient
reaches the feature network through both frames.

Presets: ``r101`` (DFF's DeepLab: dilated ResNet-101 and a 1024-channel 3x3 conv),
``mask2former-r101`` and ``mask2former-swin-b`` (MPVSS Table 2), ``tiny`` (SegFormer-tiny
with a small FlowNetS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.flownet import FLOWNETS_FULL, FLOWNETS_TINY, FlowNetS
from vssbench.methods.segmentors import SEGMENTORS, ImageSegmentor, build_segmentor
from vssbench.methods.segmentors.base import pad_to_multiple
from vssbench.methods.warp import flow_warp


class FeatureFlow(nn.Module):
    """FlowNetS plus DFF's scale convs: warps a list of feature maps from one frame to another.

    ``size_divisibility`` is the segmentor's input padding: the frame pair is padded alike, so that
    the flow covers the area the features do."""

    def __init__(self, feature_channels: list[int], flownet: dict, size_divisibility: int = 1) -> None:
        super().__init__()
        self.size_divisibility = size_divisibility
        self.flownet = FlowNetS(**flownet)
        self.scale = nn.ModuleList(nn.Conv2d(self.flownet.decoder.out_channels, c, 1) for c in feature_channels)
        for conv in self.scale:
            nn.init.zeros_(conv.weight)
            nn.init.ones_(conv.bias)

    def forward(self, features: list[torch.Tensor], current: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        """``features`` of frame ``source`` -> aligned with frame ``current``, times the scale field."""
        flow, flow_features = self._flow(current, source)
        return [flow_warp(feature, flow) * F.interpolate(scale_conv(flow_features), size=feature.shape[-2:],
                                                         mode="bilinear", align_corners=False)
                for feature, scale_conv in zip(features, self.scale)]

    def warp(self, features: list[torch.Tensor], current: torch.Tensor, source: torch.Tensor) -> list[torch.Tensor]:
        """The maps warped by the flow alone, without the scale field (Accel's propagation)."""
        flow, _ = self._flow(current, source)
        return [flow_warp(feature, flow) for feature in features]

    def _flow(self, current: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flownet.flow_and_features(pad_to_multiple(current, self.size_divisibility),
                                              pad_to_multiple(source, self.size_divisibility))


@register_method("dff")
class DFF(VideoMethod):
    """The feature network on key frames, its features flow-warped to every other frame."""

    presets = {
        "r101": dict(segmentor="deeplab-r101", flownet=FLOWNETS_FULL),
        "mask2former-r101": dict(segmentor="mask2former-r101", flownet=FLOWNETS_FULL),
        "mask2former-swin-b": dict(segmentor="mask2former-swin-b", flownet=FLOWNETS_FULL),
        "tiny": dict(segmentor="segformer-tiny", flownet=FLOWNETS_TINY),
    }
    default_preset = "tiny"

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, flownet: dict) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: ImageSegmentor = build_segmentor(segmentor, num_classes)
        self.feature_flow = FeatureFlow(self.segmentor.feature_channels, flownet, self.segmentor.size_divisibility)
        head = {id(p) for p in self.segmentor.head_parameters()}
        for parameter in self.segmentor.parameters():
            parameter.requires_grad = id(parameter) in head
        self._key: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    def weight_components(self) -> dict[str, str]:
        return {"segmentor": "segmentor", "flow": "feature_flow.flownet"}

    def reset(self) -> None:
        self._key = None

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        if is_key or self._key is None:
            self._key = (frame, self.segmentor.extract(frame))
            return self.segmentor.decode(self._key[1], frame.shape[-2:])
        key_frame, key_features = self._key
        return self.segmentor.decode(self.feature_flow(key_features, frame, key_frame), frame.shape[-2:])

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key, current = batch["frames"][:, 0], batch["frames"][:, 1]
        features = self.segmentor.extract(key)
        warped = self.segmentor.head_loss(self.feature_flow(features, current, key), batch["labels"][:, 1])
        # The head also decodes key frames from their own features; without this term it drifts
        # towards warped-and-scaled features only (measured: mIoU at k=1 fell from 90.4 to 40.9).
        on_key = self.segmentor.head_loss(features, batch["labels"][:, 0])
        return {**{f"{k}_current": v for k, v in warped.items()}, **{f"{k}_key": v for k, v in on_key.items()}}

    def loss_terms(self) -> tuple[str, ...]:
        return tuple(f"{term}_{frame}" for frame in ("current", "key") for term in self.segmentor.loss_terms)

    def dropped_loss_terms(self) -> dict[str, str]:
        """The recipes weight the head losses of every segmentor DFF runs over (DeepLab's and SegFormer's
        cross-entropy, Mask2Former's class, mask and dice); the terms of the other segmentors are dropped."""
        own = set(self.loss_terms())
        every = sorted({term for segmentor, _ in SEGMENTORS.values() for term in segmentor.loss_terms})
        return {f"{term}_{frame}": f"dff:{self.preset} runs over {self.segmentor_preset}, whose head loss has no {term}"
                for term in every for frame in ("current", "key") if f"{term}_{frame}" not in own}
