"""MRCFA (Sun, Liu, Ding, Zhou, Van Gool: "Mining Relations among Cross-Frame Affinities for Video Semantic
Segmentation", ECCV 2022; code and VSPW weights: GuoleiSun/VSS-MRCFA), as its head
``SegFormerHead_clips2_resize_1_8_hypercorrelation2_topk_ensemble4`` runs.

Every frame goes through a SegFormer (decoder 256 wide): the fused features F at 1/4 give the per-frame
prediction. The target t then gathers features from its reference frames through cross-frame
affinities mined across levels (the paper's Sec. 3):

* affinities at three levels: the target's stage-4, -3 and -2 features (1/32, 1/16, 1/8), each
  projected (``q3``, ``q2``, ``q1``), against every reference's stage-4, -3 and -2 features brought to
  1/32 (stage 3 by a stride-2 conv ``sr3``, stage 2 by a stride-4 conv ``sr2``) and projected
  (``k3``, ``k2``, ``k1``);
* selective token masking: at 1/32 each reference position is scored by the sum of its five largest
  affinities to the target, and only the best ``threshold`` share of them (0.8 at B0, 0.5 otherwise)
  is kept, the same positions at every level;
* the multi-level affinities, each a map over the target's positions for every kept reference
  position, are refined and merged coarse to fine by small convolution blocks (HSNet's
  center-pivot 4D convolutions, of which MRCFA keeps the half over the target's dimensions), and a
  softmax over the kept positions gives attention weights;
* each reference's kept features (F at 1/8 brought to 1/32 by a stride-4 conv ``sr1_feat``) are
  gathered with them at the target's 1/8 positions; the mean of the three references plus the
  target's own F at 1/8 is classified (``deco4``) and upsampled to 1/4.

Test-time protocol and per-frame cache as CFFM's (:mod:`vssbench.methods.clips`, the same
``CustomDataset_video2``): the per-frame work (SegFormer, the reference-side convolutions) is computed
once per frame.

The official code requires each 1/8 map to be exactly four times its 1/32 map (its VSPW pipeline
resizes frames to multiples of 32): elsewhere the stage-2 and stage-4 positions disagree and it fails.
Both protocols here therefore resize the frame up to the next multiple of 32 in each dimension first
(the default the normalised frame, bilinear; ``official`` the 8-bit image as mmcv does) and return the
logits at that size, which the runner resizes to the label (docs/methods.md).

Training (``loss``): 0.5 x the cross-entropy of the per-frame predictions of the clip and of the three
per-reference outputs (``deco1-3``, each against its reference frame's labels, as the official
``losses`` pairs them), plus the cross-entropy of the target's output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import register_method
from vssbench.methods.clips import ClipMethod, Protocol, resize_to_multiple, segformer_branch, split_clip
from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors import cross_entropy

TOP_K = 5  # affinities summed to score a reference position


def _block(channels: list[int], kernels: list[int]) -> nn.Sequential:
    """Convolutions over the target's dimensions, each with group norm (one group) and ReLU
    (``make_building_block`` of ``HPNLearner_topk2``; the conv sits at ``<i>.conv2``)."""
    layers: list[nn.Module] = []
    for inputs, outputs, kernel in zip(channels[:-1], channels[1:], kernels):
        pivot = nn.Module()
        pivot.conv2 = nn.Conv2d(inputs, outputs, kernel, padding=kernel // 2)
        layers += [pivot, nn.GroupNorm(1, outputs), nn.ReLU()]
    return nn.Sequential(*layers)


class _Pivot(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer.conv2(x) if hasattr(layer, "conv2") else layer(x)
        return x


class AffinityLearner(nn.Module):
    """``HPNLearner_topk2``: squeeze each level's affinity maps, then merge 1/32 -> 1/16 -> 1/8."""

    def __init__(self, wide: bool) -> None:
        super().__init__()
        if wide:  # the official 'b1' setting
            self.encoder_layer4 = _Pivot(*_block([1, 1, 2], [3, 3]))
            self.encoder_layer3 = _Pivot(*_block([1, 1, 2], [3, 3]))
            self.encoder_layer2 = _Pivot(*_block([1, 1, 2], [5, 3]))
            self.encoder_layer4to3 = _Pivot(*_block([2, 2, 2], [3, 3]))
            self.encoder_layer3to2 = _Pivot(*_block([2, 2, 1], [3, 3]))
        else:
            self.encoder_layer4 = _Pivot(*_block([1, 1], [3]))
            self.encoder_layer3 = _Pivot(*_block([1, 1], [5]))
            self.encoder_layer2 = _Pivot(*_block([1, 1], [5]))
            self.encoder_layer4to3 = _Pivot(*_block([1, 1], [3]))
            self.encoder_layer3to2 = _Pivot(*_block([1, 1], [3]))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        coarse, middle, fine = self.encoder_layer4(levels[0]), self.encoder_layer3(levels[1]), self.encoder_layer2(levels[2])
        mixed = self.encoder_layer4to3(F.interpolate(coarse, middle.shape[-2:], mode="bilinear", align_corners=True)
                                       + middle)
        return self.encoder_layer3to2(F.interpolate(mixed, fine.shape[-2:], mode="bilinear", align_corners=True) + fine)


class CrossFrameAffinity(nn.Module):
    """``hypercorre_topk2``: multi-level affinities of the target to the kept reference positions."""

    def __init__(self, channels: list[int], threshold: float, wide: bool) -> None:
        super().__init__()
        for i, width in enumerate(channels[1:], start=1):  # q_i, k_i on stage i+1 (64/128/320/512-wide at B1+)
            setattr(self, f"q{i}", nn.Linear(width, width))
            setattr(self, f"k{i}", nn.Linear(width, width))
        self.hpn = AffinityLearner(wide)
        self.threshold = threshold

    def forward(self, references: list[torch.Tensor], target: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """references: stage 4, 3, 2 features of each reference, all at 1/32, (B, R, C, h, w); target: its
        stage 4, 3, 2 features (B, 1, C, h, w) at 1/32, 1/16, 1/8. Returns the affinities (B, R, n, s) of
        the n target positions at 1/8 to the s kept reference positions, and the kept mask (B, R, h*w)."""
        keys = [self.k3, self.k2, self.k1]
        queries = [self.q3, self.q2, self.q1]
        b, r = references[0].shape[:2]
        levels, kept = [], None
        for level, (reference, frame) in enumerate(zip(references, target)):
            key = keys[level](reference.permute(0, 1, 3, 4, 2)).flatten(2, 3)  # (B, R, h*w, C)
            query = queries[level](frame.permute(0, 1, 3, 4, 2)).flatten(2, 3)  # (B, 1, n, C)
            height, width = frame.shape[-2:]
            if level == 0:
                affinity = query @ key.transpose(2, 3)  # (B, R, n, h*w)
                score = torch.topk(affinity, TOP_K, dim=2)[0].sum(2)  # (B, R, h*w)
                h, w = reference.shape[-2:]
                next_h, next_w = references[1].shape[-2:]
                if (next_h, next_w) != (h, w):  # the official path for unaligned maps
                    affinity = F.interpolate(affinity.reshape(b * r, -1, h, w), (next_h, next_w), mode="bilinear",
                                             align_corners=False).reshape(b, r, -1, next_h * next_w)
                    score = F.interpolate(score.reshape(b, r, h, w), (next_h, next_w), mode="bilinear",
                                          align_corners=False).reshape(b, r, -1)
                count = int(score.shape[2] * self.threshold)
                kept = torch.zeros_like(score).scatter(2, torch.topk(score, count, dim=2)[1], 1) > 0.5
                affinity = affinity[kept.unsqueeze(2).expand_as(affinity)].reshape(b, r, -1, count)
            else:
                selected = key[kept].reshape(b, r, -1, key.shape[-1])
                affinity = query @ selected.transpose(2, 3)  # (B, R, n, s)
            s = affinity.shape[3]
            levels.append(affinity.permute(0, 1, 3, 2).reshape(b * r * s, 1, height, width))
        merged = self.hpn(levels)  # (B*R*s, 1, h8, w8)
        n = merged.shape[-2] * merged.shape[-1]
        return merged.squeeze(1).reshape(b, r, s, n).permute(0, 1, 3, 2), kept


@register_method("mrcfa")
class MRCFA(ClipMethod):
    """A SegFormer on every frame and the target's features gathered from its references by mined affinities."""

    presets = {
        # MiT size, token-masking threshold and affinity learner of the official configs
        # (local_configs/mrcfa/B*/mrcfa.b*.480x480.vspw2_hypercorr.160k.py, hypercorre.py).
        "b0": dict(segmentor="segformer-b0", threshold=0.8, wide=False),
        "b1": dict(segmentor="segformer-b1", threshold=0.5, wide=True),
        "b2": dict(segmentor="segformer-b2-d256", threshold=0.5, wide=False),
        "b5": dict(segmentor="segformer-b5-d256", threshold=0.5, wide=False),
        "tiny": dict(segmentor="segformer-tiny", threshold=0.5, wide=False),
    }
    default_preset = "tiny"
    # The official code needs every 1/8 map to be 4x its 1/32 map: even the default aligns to 32.
    protocols = {"default": Protocol(size_divisor=32, pixels=False, recompute=False),
                 "official": Protocol(size_divisor=32, pixels=True, recompute=True)}

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, threshold: float,
                 wide: bool) -> None:
        super().__init__(preset, variant, num_classes, segmentor)
        channels, width = list(self.segmentor.config.hidden_sizes), self.segmentor.config.decoder_hidden_size
        self.hypercorre_module = CrossFrameAffinity(channels, threshold, wide)
        self.sr2 = nn.Conv2d(channels[1], channels[1], kernel_size=4, stride=4)
        self.sr3 = nn.Conv2d(channels[2], channels[2], kernel_size=2, stride=2)
        self.sr1_feat = nn.Conv2d(width, width, kernel_size=4, stride=4)
        dropout = self.segmentor.config.classifier_dropout_prob
        for i in range(1, 5):  # small_decoder2: dropout, then a 1x1 classifier
            setattr(self, f"deco{i}", nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(width, num_classes, 1)))

    def per_frame(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """What depends on one frame alone: its per-frame logits at 1/4, its features at 1/8 and at 1/32
        (``sr1_feat``), its stage features as a target (stages 4, 3, 2) and as a reference (at 1/32)."""
        stages = self.segmentor.extract(frames)
        fused = self.segmentor.fuse(stages)
        head = self.segmentor.model.decode_head
        h, w = fused.shape[2:]
        half = F.interpolate(fused, size=(int(h / 2), int(w / 2)), mode="bilinear", align_corners=False)
        return {"logits": head.classifier(head.dropout(fused)), "half": half, "gathered": self.sr1_feat(half),
                "target": [stages[3], stages[2], stages[1]],
                "reference": [stages[3], self.sr3(stages[2]), self.sr2(stages[1])]}

    def refine(self, clip: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The target's logits at 1/4 (``deco4``) and the three per-reference logits (``deco1-3``, training)."""
        references, target = clip[:-1], clip[-1]
        stacked = [torch.stack([ref["reference"][level] for ref in references], 1) for level in range(3)]
        affinity, kept = self.hypercorre_module(stacked, [t.unsqueeze(1) for t in target["target"]])
        affinity = affinity.softmax(-1)
        b, r = affinity.shape[:2]
        values = torch.stack([ref["gathered"] for ref in references], 1).flatten(3).transpose(2, 3)  # (B, R, h*w, C)
        values = values[kept].reshape(b, r, -1, values.shape[-1])
        h2, w2 = target["half"].shape[2:]
        gathered = (affinity @ values).transpose(2, 3).reshape(b, r, -1, h2, w2).unbind(1)
        size = target["logits"].shape[2:]
        per_reference = [F.interpolate(decoder(g), size=size, mode="bilinear", align_corners=False)
                         for decoder, g in zip((self.deco1, self.deco2, self.deco3), gathered)]
        mean = (gathered[0] + gathered[1] + gathered[2]) / 3.0
        out = F.interpolate(self.deco4(mean + target["half"]), size=size, mode="bilinear", align_corners=False)
        return out, per_reference

    def predict_clip(self, clip: list[dict]) -> torch.Tensor:
        return self.refine(clip)[0]

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames, labels = batch["frames"], batch["labels"]
        b, t = frames.shape[:2]
        flat = self.per_frame(resize_to_multiple(frames.flatten(0, 1), 32))
        out, per_reference = self.refine(split_clip(flat, b, t))
        logits = torch.cat([flat["logits"].view(b, t, *flat["logits"].shape[1:]),
                            torch.stack(per_reference, 1)], 1).flatten(0, 1)
        clip_labels = torch.cat([labels, labels[:, :-1]], 1).flatten(0, 1)
        return {"clip": cross_entropy(logits, clip_labels), "target": cross_entropy(out, labels[:, -1])}

    def loss_terms(self) -> tuple[str, ...]:
        return ("clip", "target")


def from_official(state: dict[str, torch.Tensor]) -> Converted:
    """An MRCFA checkpoint (mmseg 0.x ``EncoderDecoder_clips``: NVlabs backbone names, the SegFormer branch
    under ``decode_head.linear_*``, the rest under ``decode_head``) -> this method's portable names."""
    converted = segformer_branch(state, ("decode_head.hypercorre_module.", "decode_head.sr", "decode_head.deco",
                                         "decode_head.linear_pred2."))
    head = rename(strip_prefix(state, "decode_head."), [
        (r"^deco(\d)\.smalldecoder\.1\.", r"deco\1.1."),
        (r"\.(\d+)\.conv2\.", r".\1.conv2."),
    ], drop={r"^(?!hypercorre_module\.|sr\d|sr1_feat|deco\d)": "the per-frame branch (converted above)"})
    converted.state.update(head.state)
    return converted
