"""TFC: temporal feature correlation for efficient and stable video semantic segmentation.

SegFormer runs in full on key frames. On a non-key frame t the MiT encoder runs stages
1-2 only and stages 3-4 are the key frame k's; the all-MLP decoder's level projections
z_l (decoder width D, each level at its own stride) are then mixed across time:

* Eq. 5-6: w_t = cosine similarity, over channels, of z_2 of frames k and t, both
  upsampled to 1/4 as the decoder does: one weight per 1/4-resolution point.
* Eq. 7: z'_l = clamp(w_t, 0, 1) * z_l^k + (1 - clamp(w_t, 0, 1)) * z_l^t for the levels
  the current frame has (1 and 2); levels 3 and 4 are the key frame's.
* Eq. 8-11: the points with w_t < 0.8 (their content changed since the key frame) are
  gathered from the decoder's fused 1/4 map, refined by a multi-scale deformable
  attention layer whose values are the mixed pyramid {z'_1, z'_2, z_3^k, z_4^k}, and
  scattered back before the classifier. Every other point keeps the interpolated feature.
* Eq. 12: training adds a focal binary cross-entropy (gamma 1) of clamp(w_t) against the
  label-consistency mask (1 where the two frames' labels agree) to the cross-entropy on
  the key and the non-key frame; pairs are sampled up to 3 frames apart (interval 4).

No official code is public. What the paper leaves open, and what is chosen here:

* Which features Eq. 7 mixes: the decoder's level projections z_1, z_2 at their own
  resolution (w average-pooled to 1/8 for level 2), so that one mixed pyramid feeds both
  the decoder and the attention's values.
* The query of a refined point: the decoder's fused feature there (after linear_fuse,
  batch norm and ReLU); the refined feature replaces it. Reference point = the point's
  pixel centre; no positional embedding (offsets are already relative to it).
* The refinement layer: a Deformable DETR encoder layer (8 heads, 4 levels, 4 points,
  FFN 4D, post-norm) at the decoder width. At MiT-B0 (D = 256) this adds 0.76M
  parameters, the paper's "about 0.7M"; at B2-B5 (D = 768) it is larger.
* Value projections of levels 3-4 are computed on the key frame and reused; levels 1-2
  are projected on every non-key frame (their features change).
* Training starts from the trained per-frame SegFormer and updates every parameter.

Variants (TFC Table 2). ``sparse-msda-0.8`` is the full method (default);
``sparse-msda-0.5`` and ``sparse-msda-1.0`` move the threshold (1.0 refines every point
whose similarity is below 1, i.e. dense). The interpolation ablations run without the
refinement: ``linear-interp`` (Eq. 7), ``hard-interp`` (key feature where w_t >= 0.8,
current feature elsewhere), ``fixed-interp`` (w = 0.1 everywhere), ``feature-reuse`` (no
mixing: the current levels 1-2 with the key's levels 3-4) and ``flow-warp`` (the key's
levels 3-4 warped to the current frame with FlowNetS flow, as DFF does, instead of reused).
The three thresholds share one trained model: the threshold only gates which points are
refined at inference; training uses 0.8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vssbench.datasets.base import IGNORE_INDEX
from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.flownet import FLOWNETS_FULL, FLOWNETS_TINY, FlowNetS
from vssbench.methods.msda import DeformableRefinement, pixel_centres
from vssbench.methods.segmentors import SegFormer, build_segmentor, cross_entropy
from vssbench.methods.warp import flow_warp

VARIANTS = ("sparse-msda-0.8", "sparse-msda-0.5", "sparse-msda-1.0", "linear-interp", "hard-interp",
            "fixed-interp", "feature-reuse", "flow-warp")
HARD_INTERP_THRESHOLD = 0.8
FIXED_INTERP_WEIGHT = 0.1
FOCAL_GAMMA = 1.0
PROFILE_REFINE_FRACTION = 0.2  # TFC Table 3's operating point, for FLOP counting
KEY_STAGES = 2  # the encoder stages computed on non-key frames; the later ones are the key frame's


@dataclass
class KeyFrameState:
    """What a non-key frame reuses from its key frame."""

    frame: torch.Tensor  # the key image, for flow-warp
    levels: list[torch.Tensor]  # decoder level projections z_l^k, (B, D, H_l, W_l)
    unit_level2: torch.Tensor  # z_2^k upsampled to 1/4 and unit-normalised over channels, for Eq. 5-6
    reused_fuse_terms: torch.Tensor  # linear_fuse's terms of levels 3-4, (B, D, H/4, W/4)
    reused_values: list[torch.Tensor]  # attention values of levels 3-4, projected once


def unit_features(level: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A level projection upsampled to ``size`` as the decoder does, unit-normalised over channels."""
    upsampled = F.interpolate(level, size=size, mode="bilinear", align_corners=False)
    return F.normalize(upsampled, dim=1)


def cosine_similarity_map(unit_key: torch.Tensor, unit_current: torch.Tensor) -> torch.Tensor:
    """Eq. 5-6: per-point cosine similarity (B, 1, H, W) of two unit-normalised maps."""
    return (unit_key * unit_current).sum(1, keepdim=True)


def interpolate_level(key_level: torch.Tensor, current_level: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 7 at the level's own resolution (the 1/4 weights average-pooled to it)."""
    if weight.shape[-2:] != key_level.shape[-2:]:
        weight = F.adaptive_avg_pool2d(weight, key_level.shape[-2:])
    return weight * key_level + (1.0 - weight) * current_level


def label_consistency(key_label: torch.Tensor, label: torch.Tensor,
                      size: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 12's target for label maps (B, H, W) at ``size`` (labels subsampled nearest):
    ``same`` (the two frames' labels agree) and ``valid`` (neither is void), both bool (B, h, w)."""
    pair = F.interpolate(torch.stack([key_label, label], 1).float(), size=size, mode="nearest")
    return pair[:, 0] == pair[:, 1], (pair != IGNORE_INDEX).all(1)


def focal_consistency_loss(similarity: torch.Tensor, key_label: torch.Tensor, label: torch.Tensor,
                           gamma: float = FOCAL_GAMMA) -> torch.Tensor:
    """Eq. 12: focal binary cross-entropy of clamp(w_t) against "same label in both frames",
    at the similarity map's resolution (labels subsampled nearest); void pixels excluded."""
    same, valid = label_consistency(key_label, label, similarity.shape[-2:])
    same = same.float()
    probability = similarity[:, 0].clamp(1e-6, 1.0 - 1e-6)
    loss = -(same * (1 - probability) ** gamma * probability.log()
             + (1 - same) * probability**gamma * (1 - probability).log())
    return loss[valid].mean() if valid.any() else similarity.sum() * 0.0


@register_method("tfc")
class TFC(VideoMethod):
    """SegFormer with temporally mixed decoder features and sparse deformable refinement."""

    presets = {
        **{f"b{i}": dict(segmentor=f"segformer-b{i}", heads=8, points=4, flownet=FLOWNETS_FULL) for i in range(6)},
        "tiny": dict(segmentor="segformer-tiny", heads=4, points=4, flownet=FLOWNETS_TINY),
    }
    default_preset = "tiny"
    variants = VARIANTS

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, heads: int, points: int,
                 flownet: dict) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)  # type: ignore[assignment]
        width = self.segmentor.config.decoder_hidden_size
        self.threshold = float(variant.rsplit("-", 1)[1]) if variant.startswith("sparse-msda") else None
        if self.threshold is not None:
            self.refinement = DeformableRefinement(width, heads, levels=4, points=points, ffn=4 * width)
        if variant == "flow-warp":
            self.flownet = FlowNetS(**flownet)
        self._key: KeyFrameState | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    @property
    def checkpoint_variant(self) -> str:
        """The thresholds share the weights trained at 0.8."""
        return "sparse-msda-0.8" if self.threshold is not None else self.variant

    def weight_components(self) -> dict[str, str]:
        return {"segmentor": "segmentor", **({"flow": "flownet"} if self.variant == "flow-warp" else {})}

    def reset(self) -> None:
        self._key = None

    @property
    def head(self) -> torch.nn.Module:
        """SegFormer's all-MLP decoder, whose layers TFC calls one by one."""
        return self.segmentor.model.decode_head

    # ------------------------------------------------------------------ the SegFormer decoder, split open

    def project_levels(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder stages -> the decoder's level projections z_l, (B, D, H_l, W_l) at each stage's size."""
        projected = []
        for hidden, projection in zip(stages, self.head.linear_projections):
            batch, _, height, width = hidden.shape
            projected.append(projection(hidden).transpose(1, 2).reshape(batch, -1, height, width))
        return projected

    def fuse_terms(self, levels: list[torch.Tensor], first: int, size: torch.Size) -> torch.Tensor:
        """Levels ``first``.. of the decoder's ``linear_fuse``, before its batch norm.

        ``linear_fuse`` is a bias-free 1x1 conv over the concatenated upsampled levels, so it
        is a sum of one term per level: the key frame's terms of the levels non-key frames
        reuse are computed once and kept, the same multiply-adds SegFormer spends on them.
        """
        weight = self.head.linear_fuse.weight  # (D, 4D, 1, 1), input levels concatenated coarse first
        width = weight.shape[0]
        total = 0.0
        for index, level in enumerate(levels, start=first):
            block = weight[:, (3 - index) * width:(4 - index) * width]
            total = total + F.conv2d(F.interpolate(level, size=size, mode="bilinear", align_corners=False), block)
        return total

    def finish_fuse(self, fused_terms: torch.Tensor) -> torch.Tensor:
        """The rest of the decoder's fusion: batch norm, ReLU, dropout."""
        return self.head.dropout(self.head.activation(self.head.batch_norm(fused_terms)))

    # ------------------------------------------------------------------ key and non-key paths

    def key_forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, KeyFrameState]:
        """Full SegFormer; returns the 1/4 logits and the state non-key frames reuse."""
        levels = self.project_levels(self.segmentor.extract_stages(frame, 4))
        size = levels[0].shape[-2:]
        reused_terms = self.fuse_terms(levels[KEY_STAGES:], KEY_STAGES, size)
        logits = self.head.classifier(self.finish_fuse(self.fuse_terms(levels[:KEY_STAGES], 0, size) + reused_terms))
        reused_values = ([self.refinement.attention.project_values(z) for z in levels[KEY_STAGES:]]
                         if self.threshold is not None else [])
        return logits, KeyFrameState(frame, levels, unit_features(levels[1], size), reused_terms, reused_values)

    def nonkey_forward(self, frame: torch.Tensor, key: KeyFrameState,
                       refine_fraction: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stages 1-2 of ``frame`` with the key frame's stages 3-4; returns the 1/4 logits and w_t
        (None for variants that do not use it). ``refine_fraction`` refines that share of the
        points with the lowest similarity instead of thresholding (for FLOP profiling)."""
        current = self.project_levels(self.segmentor.extract_stages(frame, KEY_STAGES))
        size = current[0].shape[-2:]
        if self.variant == "feature-reuse":
            fused = self.finish_fuse(self.fuse_terms(current, 0, size) + key.reused_fuse_terms)
            return self.head.classifier(fused), None
        if self.variant == "flow-warp":
            flow = self.flownet(frame, key.frame)
            warped = [flow_warp(z, flow) for z in key.levels[KEY_STAGES:]]
            return self.head.classifier(self.finish_fuse(self.fuse_terms(current + warped, 0, size))), None
        similarity = cosine_similarity_map(key.unit_level2, unit_features(current[1], size))  # Eq. 5-6
        if self.variant == "fixed-interp":
            weight = torch.full_like(similarity, FIXED_INTERP_WEIGHT)
        elif self.variant == "hard-interp":
            weight = (similarity >= HARD_INTERP_THRESHOLD).to(similarity.dtype)
        else:
            weight = similarity.clamp(0.0, 1.0)
        mixed = [interpolate_level(key.levels[level], current[level], weight) for level in range(KEY_STAGES)]
        fused = self.finish_fuse(self.fuse_terms(mixed, 0, size) + key.reused_fuse_terms)
        if self.threshold is not None:
            values = [self.refinement.attention.project_values(z) for z in mixed] + key.reused_values
            fused = self.refine(fused, similarity, values, refine_fraction)
        # fixed-interp never uses w_t, so nothing supervises it there
        return self.head.classifier(fused), None if self.variant == "fixed-interp" else similarity

    def refine(self, fused: torch.Tensor, similarity: torch.Tensor, values: list[torch.Tensor],
               refine_fraction: float | None = None) -> torch.Tensor:
        """Eq. 8-11: gather the points with w_t below the threshold, refine them with deformable
        attention over the mixed pyramid, scatter them back. Costs in proportion to their number."""
        batch, _, height, width = fused.shape
        centres = pixel_centres(height, width, fused.device)
        flat = fused.flatten(2)
        rows = []
        heads = self.refinement.attention.heads
        for b in range(batch):
            scores = similarity[b].flatten()
            if refine_fraction is None:
                selected = (scores < self.threshold).nonzero().squeeze(1)
            else:
                selected = scores.topk(int(refine_fraction * height * width + 0.5), largest=False).indices
            row = flat[b]
            if selected.numel():
                queries = row[:, selected].t()[None]
                item_values = [v[b * heads:(b + 1) * heads] for v in values]
                refined = self.refinement(queries, centres[selected][None], item_values)[0]
                row = row.index_copy(1, selected, refined.t())
            rows.append(row)
        return torch.stack(rows).view_as(fused)

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        if is_key or self._key is None:
            logits, self._key = self.key_forward(frame)
        else:
            logits, _ = self.nonkey_forward(frame, self._key)
        return _to_frame_size(logits, frame)

    def cost_paths(self, frame: torch.Tensor) -> dict:
        """Key path, and the non-key path with 20% of the points refined (TFC Table 3's operating
        point): on a repeated frame w_t = 1 everywhere and nothing would be refined. Both end
        with the upsampling to the frame that ``step`` does."""
        self.reset()
        with torch.no_grad():
            _, state = self.key_forward(frame)
        return {"key": lambda: self.step(frame, True),
                "nonkey": lambda: _to_frame_size(
                    self.nonkey_forward(frame, state, refine_fraction=PROFILE_REFINE_FRACTION)[0], frame)}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames, labels = batch["frames"], batch["labels"]
        key_logits, state = self.key_forward(frames[:, 0])
        logits, similarity = self.nonkey_forward(frames[:, 1], state)
        terms = {"cross_entropy_key": cross_entropy(key_logits, labels[:, 0]),
                 "cross_entropy_nonkey": cross_entropy(logits, labels[:, 1])}
        if similarity is not None:
            terms["focal_consistency"] = focal_consistency_loss(similarity, labels[:, 0], labels[:, 1])
        return terms


def _to_frame_size(logits: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """The decoder's 1/4 logits upsampled to the frame, as SegFormer returns them."""
    return F.interpolate(logits, size=frame.shape[-2:], mode="bilinear", align_corners=False)
