"""TFC: temporal feature correlation for efficient and stable video semantic segmentation.

SegFormer runs in full on key frames. On a non-key frame t the MiT encoder runs stages
1-2 only and stages 3-4 are the key frame k's (Eq. 4: x_t = (x_t^1, x_t^2, x_k^3, x_k^4)).
The equations as printed are the default:

* Eq. 2: z_t, the decoder's fused feature of the pyramid x_t (its level projections, upsampled
  to 1/4, concatenated, ``linear_fuse`` with its batch norm and ReLU); the key frame's terms of
  levels 3-4 are computed once on the key frame, the same multiply-adds SegFormer spends.
* Eq. 5-6: w_t = cosine similarity, over channels, of x^2 projected and resized to 1/4 (the
  decoder's level-2 projection, upsampled) of frames k and t: one weight per 1/4 point.
* Eq. 7: z'_t = clamp(w_t, 0, 1) * z_k + (1 - clamp(w_t, 0, 1)) * z_t, on the fused features.
* Eq. 8-11: the points with w_t < 0.8 (their content changed since the key frame) are
  gathered from z'_t; multi-scale deformable attention (Eq. 9: offsets and weights from the
  point's feature, values W'_m over the un-mixed pyramid x_t, Eq. 10) gives each one's new
  feature, which replaces it; the classifier (Eq. 3) reads the result. Every other point keeps
  its interpolated feature.
* Eq. 12: L = L_seg + L_bce, L_seg the average of the key and non-key frames' cross-entropies,
  L_bce a focal binary cross-entropy (gamma 1) of clamp(w_t) against the label-consistency mask.
  ``loss`` returns the three terms unweighted and the recipe's ``loss_weights`` (0.5, 0.5, 1)
  make that sum; pairs are sampled 1-3 frames apart (interval 4).

No official code is public. What the paper leaves open, and what is chosen here:

* Eq. 10's pyramid: the levels of x_t have their own widths (32-512), while W'_m is shared
  across levels, so the values are taken from the decoder's per-level projections of x_t (width
  D), at each level's own resolution. Levels 3-4 are the key frame's and projected once.
* The query of a refined point is its feature in z'_t; its reference point is the point's pixel
  centre; no positional embedding (offsets are already relative to it).
* The refinement of Eq. 9 is a Deformable DETR encoder layer (the deformable attention, 8 heads,
  4 levels, 4 points, with a residual and LayerNorm, then an FFN of 4D, residual and LayerNorm):
  0.76M parameters at D = 256, the published "+0.7M" of TFC Table 1 at B0, B1 and B5 alike. The
  published parameters measure the code the authors ran, and only this form reproduces them; Eq. 9
  as printed (the attention alone, 0.23M at D = 256) is variant ``sparse-msda-0.8-attention``. Sec.
  4.2's non-key FLOPs fit neither form at 20% of points refined: at B0 the attention alone's (5.87
  against 6.4 GFLOPs at 480x480; the layer 7.38), at B5 the layer's over the 768-wide decoder.
  The refined points are LayerNorm outputs written into the map of batch-norm and ReLU outputs.
* Width: TFC Table 1's SegFormer-B5 (82.1M) and TFC-B5 (82.8M) are counts of mmseg's SegFormer,
  whose decoder is 256 wide at every size, so the B2-B5 presets build on ``segformer-bN-mmseg``
  and refine at D = 256 there too (B0 and B1 are 256 wide in either head); ``b2-768`` .. ``b5-768``
  build on SegFormer's own 768-wide decoder (the layout of NVlabs' and CFFM's weights). TFC Sec.
  4.2's 53.2 non-key GFLOPs at B5 are what ``b5-768`` costs, not ``b5``: the published parameters
  and FLOPs do not come from one architecture (reports/fidelity.md).
* The consistency target of Eq. 12 at 1/4 resolution: one label pixel per 1/4 cell (nearest
  subsampling, the default) or "the cell changed anywhere" (variant
  ``sparse-msda-0.8-cell-target``: a cell is consistent only if no pixel of it changed label).
* ``fixed-interp``: the paper "set[s] the weight to be 0.1" because "approximately 10% of the
  feature points change": read as 0.1 on the current frame's (changing) features, i.e. 0.9 on the
  key frame's in Eq. 7, which is what makes it "much more stable" in Table 2 (85.9 mVC8 against
  85.0 for the linear interpolation); 0.1 on the key frame would be less stable than it.
* Training starts from the trained per-frame SegFormer and updates every parameter.

Variants (TFC Table 2), as data in :data:`VARIANTS`. ``sparse-msda-0.8`` is the full method
(default); ``sparse-msda-0.5`` and ``sparse-msda-1.0`` move the threshold (1.0 refines every
point whose similarity is below 1, i.e. dense); they share one trained model: the threshold only
gates which points are refined at inference, and the shared model is trained at 0.8 whichever
variant asks for it first. ``sparse-msda-0.8-attention`` and ``sparse-msda-0.8-cell-target`` are
the two choices above. The interpolation ablations run
without the refinement: ``linear-interp`` (Eq. 7), ``hard-interp`` (key feature where
w_t >= 0.8, current feature elsewhere), ``fixed-interp`` (key weight 0.9 everywhere),
``feature-reuse`` (no mixing: z_t of Eq. 4's pyramid), ``flow-warp-raft`` (the key's levels 3-4
warped to the current frame with RAFT's flow instead of reused, the paper's "Flow-guided Warping"
row, which cites RAFT: RAFT-large for the paper presets, RAFT-small for ``tiny``, 12 iterations,
RAFT's own default, since the paper states none) and ``flow-warp`` (the same with FlowNetS flow, as
DFF warps). Variants without a similarity map (``feature-reuse``, ``fixed-interp``, the two
flow warps) have no consistency term to train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vssbench.datasets.base import IGNORE_INDEX
from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.flownet import FLOWNETS_FULL, FLOWNETS_TINY, FlowNetS
from vssbench.methods.msda import DeformableAttentionBlock, DeformableRefinement, pixel_centres
from vssbench.methods.raft import ImageNetRAFT
from vssbench.methods.segmentors import SegFormer, build_segmentor, cross_entropy
from vssbench.methods.warp import flow_warp



@dataclass(frozen=True)
class Variant:
    """One row of TFC Table 2: how a non-key frame mixes and refines its features."""

    # Eq. 7's weight of the key frame: the clamped similarity, a hard threshold of it, a constant,
    # no mixing (the pyramid of Eq. 4 alone), or no mixing with levels 3-4 flow-warped.
    mixing: Literal["similarity", "hard", "fixed", "none", "flow-warp"]
    threshold: float | None = None  # Eq. 8: refine the points with w_t below it (None: no refinement)
    refinement: Literal["layer", "attention"] = "layer"
    consistency_target: Literal["nearest", "cell"] = "nearest"  # Eq. 12's target (label_consistency)
    trained_at: str | None = None  # the variant whose trained weights it uses (None: its own)
    flow: Literal["flownets", "raft"] = "flownets"  # the flow network of mixing "flow-warp"


VARIANTS = {
    "sparse-msda-0.8": Variant("similarity", 0.8),
    "sparse-msda-0.5": Variant("similarity", 0.5, trained_at="sparse-msda-0.8"),
    "sparse-msda-1.0": Variant("similarity", 1.0, trained_at="sparse-msda-0.8"),
    "sparse-msda-0.8-attention": Variant("similarity", 0.8, refinement="attention"),
    "sparse-msda-0.8-cell-target": Variant("similarity", 0.8, consistency_target="cell"),
    "linear-interp": Variant("similarity"),
    "hard-interp": Variant("hard"),
    "fixed-interp": Variant("fixed"),
    "feature-reuse": Variant("none"),
    "flow-warp": Variant("flow-warp"),
    "flow-warp-raft": Variant("flow-warp", flow="raft"),
}
HARD_INTERP_THRESHOLD = 0.8
FIXED_INTERP_KEY_WEIGHT = 0.9  # "0.1" of the changing (current) features; see the module docstring
FOCAL_GAMMA = 1.0
PROFILE_REFINE_FRACTION = 0.2  # TFC Table 3's operating point, for FLOP counting
KEY_STAGES = 2  # the encoder stages computed on non-key frames; the later ones are the key frame's


@dataclass
class KeyFrameState:
    """What a non-key frame reuses from its key frame."""

    frame: torch.Tensor  # the key image, for flow-warp
    levels: list[torch.Tensor]  # decoder level projections of x_k^l, (B, D, H_l, W_l)
    fused: torch.Tensor  # z_k (Eq. 2), (B, D, H/4, W/4)
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


def label_consistency(key_label: torch.Tensor, label: torch.Tensor, size: torch.Size,
                      target: str = "nearest") -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 12's target for label maps (B, H, W) at ``size``: ``same`` and ``valid``, both bool (B, h, w).

    ``nearest``: one label pixel per cell (nearest subsampling); same where the two frames' labels
    agree there, valid where neither is void. ``cell``: same where no pixel of the cell changed label
    (pixels void in either frame left out), valid where the cell has a pixel labelled in both."""
    if target == "nearest":
        pair = F.interpolate(torch.stack([key_label, label], 1).float(), size=size, mode="nearest")
        return pair[:, 0] == pair[:, 1], (pair != IGNORE_INDEX).all(1)
    labelled = (key_label != IGNORE_INDEX) & (label != IGNORE_INDEX)
    changed = (key_label != label) & labelled
    changed_cells = F.adaptive_max_pool2d(changed[:, None].float(), size)[:, 0] > 0
    valid_cells = F.adaptive_max_pool2d(labelled[:, None].float(), size)[:, 0] > 0
    return ~changed_cells, valid_cells


def focal_consistency_loss(similarity: torch.Tensor, key_label: torch.Tensor, label: torch.Tensor,
                           gamma: float = FOCAL_GAMMA, target: str = "nearest") -> torch.Tensor:
    """Eq. 12: focal binary cross-entropy of clamp(w_t) against "same label in both frames",
    at the similarity map's resolution (``target``: see :func:`label_consistency`); void excluded."""
    same, valid = label_consistency(key_label, label, similarity.shape[-2:], target)
    same = same.float()
    probability = similarity[:, 0].clamp(1e-6, 1.0 - 1e-6)
    loss = -(same * (1 - probability) ** gamma * probability.log()
             + (1 - same) * probability**gamma * (1 - probability).log())
    return loss[valid].mean() if valid.any() else similarity.sum() * 0.0


@register_method("tfc")
class TFC(VideoMethod):
    """SegFormer with temporally mixed decoder features and sparse deformable refinement."""

    presets = {
        # B0/B1: SegFormer's 256-wide decoder; B2-B5: mmseg's, 256 wide too, whose counts TFC Table 1 reports.
        **{f"b{i}": dict(segmentor=f"segformer-b{i}" if i < 2 else f"segformer-b{i}-mmseg", heads=8, points=4,
                         flownet=FLOWNETS_FULL, raft="large") for i in range(6)},
        # B2-B5 over SegFormer's own 768-wide decoder (NVlabs' and CFFM's weights), refining at D = 768.
        **{f"b{i}-768": dict(segmentor=f"segformer-b{i}", heads=8, points=4, flownet=FLOWNETS_FULL, raft="large")
           for i in range(2, 6)},
        "tiny": dict(segmentor="segformer-tiny", heads=4, points=4, flownet=FLOWNETS_TINY, raft="small"),
    }
    default_preset = "tiny"
    variants = tuple(VARIANTS)

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, heads: int, points: int,
                 flownet: dict, raft: str = "large") -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)  # type: ignore[assignment]
        self.settings = VARIANTS[variant]
        self.threshold = self.settings.threshold
        width = self.segmentor.config.decoder_hidden_size
        if self.threshold is not None and self.settings.refinement == "layer":
            self.refinement = DeformableRefinement(width, heads, levels=4, points=points, ffn=4 * width)
        elif self.threshold is not None:
            self.refinement = DeformableAttentionBlock(width, heads, levels=4, points=points)
        if self.settings.mixing == "flow-warp":
            self.flownet = ImageNetRAFT(raft) if self.settings.flow == "raft" else FlowNetS(**flownet)
        self._key: KeyFrameState | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    @property
    def checkpoint_variant(self) -> str:
        """The thresholds share the weights trained at 0.8."""
        return self.settings.trained_at or self.variant

    def weight_components(self) -> dict[str, str]:
        return {"segmentor": "segmentor", **({"flow": "flownet"} if self.settings.mixing == "flow-warp" else {})}

    def reset(self) -> None:
        self._key = None

    @property
    def head(self) -> torch.nn.Module:
        """SegFormer's decoder, whose layers TFC calls one by one: the all-MLP decoder (``hf``) or
        mmseg's SegformerHead (``mmseg``: per-level 1x1 conv with batch norm and ReLU, levels
        concatenated finest first, then ``fusion_conv``)."""
        return self.segmentor.model.decode_head

    @property
    def _mmseg(self) -> bool:
        return self.segmentor.head == "mmseg"

    def classifier(self, fused: torch.Tensor) -> torch.Tensor:
        """Eq. 3: the decoder's classifier on fused features."""
        return self.head.conv_seg(fused) if self._mmseg else self.head.classifier(fused)

    # ------------------------------------------------------------------ the SegFormer decoder, split open

    def project_levels(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """Encoder stages -> the decoder's level projections z_l, (B, D, H_l, W_l) at each stage's size."""
        if self._mmseg:
            return [conv(hidden) for hidden, conv in zip(stages, self.head.convs)]
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
        # (D, 4D, 1, 1); the levels are concatenated coarse first (hf), finest first (mmseg)
        weight = self.head.fusion_conv.conv.weight if self._mmseg else self.head.linear_fuse.weight
        width = weight.shape[0]
        total = 0.0
        for index, level in enumerate(levels, start=first):
            position = index if self._mmseg else 3 - index
            block = weight[:, position * width:(position + 1) * width]
            total = total + F.conv2d(F.interpolate(level, size=size, mode="bilinear", align_corners=False), block)
        return total

    def finish_fuse(self, fused_terms: torch.Tensor) -> torch.Tensor:
        """The rest of the decoder's fusion: batch norm, ReLU, dropout."""
        if self._mmseg:
            return self.head.dropout(self.head.fusion_conv.activate(self.head.fusion_conv.bn(fused_terms)))
        return self.head.dropout(self.head.activation(self.head.batch_norm(fused_terms)))

    # ------------------------------------------------------------------ key and non-key paths

    def key_forward(self, frame: torch.Tensor) -> tuple[torch.Tensor, KeyFrameState]:
        """Full SegFormer; returns the 1/4 logits and the state non-key frames reuse."""
        levels = self.project_levels(self.segmentor.extract_stages(frame, 4))
        size = levels[0].shape[-2:]
        reused_terms = self.fuse_terms(levels[KEY_STAGES:], KEY_STAGES, size)
        fused = self.finish_fuse(self.fuse_terms(levels[:KEY_STAGES], 0, size) + reused_terms)  # z_k, Eq. 2
        reused_values = ([self.refinement.attention.project_values(z) for z in levels[KEY_STAGES:]]
                         if self.threshold is not None else [])
        state = KeyFrameState(frame, levels, fused, unit_features(levels[1], size), reused_terms, reused_values)
        return self.classifier(fused), state

    def nonkey_forward(self, frame: torch.Tensor, key: KeyFrameState,
                       refine_fraction: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stages 1-2 of ``frame`` with the key frame's stages 3-4; returns the 1/4 logits and w_t
        (None for variants that do not use it). ``refine_fraction`` refines that share of the
        points with the lowest similarity instead of thresholding (for FLOP profiling)."""
        current = self.project_levels(self.segmentor.extract_stages(frame, KEY_STAGES))
        size = current[0].shape[-2:]
        mixing = self.settings.mixing
        if mixing == "flow-warp":
            flow = self.flownet(frame, key.frame)
            warped = [flow_warp(z, flow) for z in key.levels[KEY_STAGES:]]
            return self.classifier(self.finish_fuse(self.fuse_terms(current + warped, 0, size))), None
        fused = self.finish_fuse(self.fuse_terms(current, 0, size) + key.reused_fuse_terms)  # z_t of x_t, Eq. 2 and 4
        if mixing == "none":
            return self.classifier(fused), None
        similarity = cosine_similarity_map(key.unit_level2, unit_features(current[1], size))  # Eq. 5-6
        if mixing == "fixed":
            weight = torch.full_like(similarity, FIXED_INTERP_KEY_WEIGHT)
        elif mixing == "hard":
            weight = (similarity >= HARD_INTERP_THRESHOLD).to(similarity.dtype)
        else:
            weight = similarity.clamp(0.0, 1.0)
        mixed = weight * key.fused + (1.0 - weight) * fused  # Eq. 7
        if self.threshold is not None:
            values = [self.refinement.attention.project_values(z) for z in current] + key.reused_values  # Eq. 10
            mixed = self.refine(mixed, similarity, values, refine_fraction)
        # fixed-interp never uses w_t, so nothing supervises it there
        return self.classifier(mixed), None if mixing == "fixed" else similarity

    def refine(self, fused: torch.Tensor, similarity: torch.Tensor, values: list[torch.Tensor],
               refine_fraction: float | None = None) -> torch.Tensor:
        """Eq. 8-11: gather the points with w_t below the threshold, refine them with deformable
        attention over the pyramid x_t, scatter them back. Costs in proportion to their number."""
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
            terms["focal_consistency"] = focal_consistency_loss(similarity, labels[:, 0], labels[:, 1],
                                                                target=self.settings.consistency_target)
        return terms

    def loss_terms(self) -> tuple[str, ...]:
        own = () if self.dropped_loss_terms() else ("focal_consistency",)
        return ("cross_entropy_key", "cross_entropy_nonkey", *own)

    def dropped_loss_terms(self) -> dict[str, str]:
        if self.settings.mixing in ("none", "fixed", "flow-warp"):
            return {"focal_consistency": f"{self.variant} does not use the similarity map w_t"}
        return {}


def _to_frame_size(logits: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """The decoder's 1/4 logits upsampled to the frame, as SegFormer returns them."""
    return F.interpolate(logits, size=frame.shape[-2:], mode="bilinear", align_corners=False)
