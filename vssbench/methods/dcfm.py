"""DCFM (Zheng, Yang, Huang: "Deep Common Feature Mining for Efficient Video Semantic Segmentation",
IEEE TCSVT 2024; code and weights: BUAAHugeGun/DCFM), as its ``nets/dcfm`` and ``process/video_test.py``
run it.

An encoder splits each frame's representation in two: the common, high-level feature F (the whole
SegFormer: MiT and its all-MLP decoder's fused feature at 1/4, 256 wide) and an independent,
low-level feature S (``stage1: vit1``: the output of the first transformer block of MiT's first
stage, at 1/4; its first ``stage1_ch`` channels are used). Both are L2-normalised over channels.

* Key frame k (``I_forward``): F_k and S_k; the feature fusion module (FFM: concatenation, a 1x1 conv
  with bias, batch norm, ReLU) gives norm(FFM(F_k, S_k)), the segmentation head classifies it and the
  logits are upsampled bilinearly to the frame. F_k is kept as the common feature.
* Non-key frame t (``B_forward``): only the patch embedding and first block of stage 1 run, giving
  S_t; norm(FFM(F_k, S_t)) is classified. The key frame's common feature carries what is shared, the
  frame's own shallow feature what is not.

Head (``final``, ``make_seg_head``): ``head_nums`` 0 is dropout and a 1x1 conv without bias (the VSPW
configs); 1 adds a 1x1 conv, batch norm and ReLU before them (Cityscapes). The MiT configs set
``bot_ch: -1`` (no bottleneck on F); the ResNet configs' 1x1 bottleneck comes with their presets,
which are not built.

Test-time protocol: ``default`` is the official code with ``val_pos: False``: a non-key frame uses the
previous key frame only, the key frames at t = 0, k, 2k, ... of each video, the runner's causal
schedule shared by every method. The official test's default (``val_pos: True``) also runs the next
key frame before the frames between and sums the two predictions' logits, and it moves the first key
frame one frame later for each successive video; that bidirectional order needs the runner to feed
frames out of display order, which it does not yet do (docs/methods.md).

Training (``loss``, DCFMDecoder's forward and the losses of ``exp/*/dcfm/*/config.yaml``): a labelled
frame L and a reference frame U. ``cross_entropy_key``: the cross-entropy of L's key-path prediction
norm(FFM(F_L, S_L)); ``cross_entropy_nonkey``: of L predicted through U's common feature,
norm(FFM(F_U, S_L)), the non-key path; ``feature``: the MSE between the two features (weight 0 in
every official config); ``consistency``: the MSE between L's and U's key-path features where their
predicted classes agree (weight 10). The recipes weight the four terms as the configs do (1, 0.4, 0,
10).

Presets: ``mitb1`` (Cityscapes), ``mitb2`` and ``mitb5`` (VSPW) as the released configs, and ``tiny``
(SegFormer-tiny, head 64 wide, 8 channels of S) for the synthetic set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors import SegFormer, build_segmentor, cross_entropy
from vssbench.methods.segmentors.segformer import from_nvlabs


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2, dim=1)


def _as_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H * W, C) tokens -> a (B, C, H, W) map."""
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Head:
    """DCFM's decoder settings (the ``decoder`` args of ``exp/*/dcfm/*/infer.yaml``)."""

    stage1_ch: int  # channels of S used by the fusion
    head_nums: int = 0  # 0: dropout, 1x1 conv; 1: 1x1 conv, batch norm, ReLU first
    dropout: float = 0.1


class FeatureFusion(nn.Module):
    """FFM: [F, S[:, :stage1_ch]] -> 1x1 conv (with bias) -> batch norm -> ReLU, ``out`` channels."""

    def __init__(self, high: int, stage1_ch: int) -> None:
        super().__init__()
        self.stage1_ch = stage1_ch
        self.conv = nn.Conv2d(high + stage1_ch, high, 1)
        self.norm = nn.BatchNorm2d(high)

    def forward(self, common: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        if shallow.shape[-2:] != common.shape[-2:]:  # video_test.py align_shape
            shallow = F.interpolate(shallow, size=common.shape[-2:], mode="bilinear", align_corners=False)
        return F.relu(self.norm(self.conv(torch.cat([common, shallow[:, : self.stage1_ch]], dim=1))))


class DCFMDecoder(nn.Module):
    """The fusion module and the segmentation head."""

    def __init__(self, high: int, num_classes: int, head: Head) -> None:
        super().__init__()
        width = high  # bot_ch -1, as every MiT config: F enters the fusion as the SegFormer gives it
        self.fusion = FeatureFusion(width, head.stage1_ch)
        layers: list[nn.Module] = []
        if head.head_nums == 1:
            layers += [nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        elif head.head_nums != 0:
            raise ValueError(f"head_nums {head.head_nums}: expected 0 or 1 (the released configs)")
        layers += [nn.Dropout2d(head.dropout), nn.Conv2d(width, num_classes, 1, bias=False)]
        self.final = nn.Sequential(*layers)

    def common(self, high: torch.Tensor) -> torch.Tensor:
        """The common feature kept from a key frame: norm(F)."""
        return l2_normalise(high)

    def fused(self, common: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        """norm(FFM(common, S)), S already normalised."""
        return l2_normalise(self.fusion(common, shallow))

    def classify(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.final(feature), size=size, mode="bilinear", align_corners=False)


@register_method("dcfm")
class DCFM(VideoMethod):
    """Common features from key frames, fused with every frame's own shallow feature."""

    presets = {
        "tiny": dict(segmentor="segformer-tiny", head=Head(stage1_ch=8)),
        "mitb1": dict(segmentor="segformer-b1", head=Head(stage1_ch=32, head_nums=1)),
        "mitb2": dict(segmentor="segformer-b2-d256", head=Head(stage1_ch=32)),
        "mitb5": dict(segmentor="segformer-b5-d256", head=Head(stage1_ch=32)),
    }
    default_preset = "tiny"
    unused_weights = {r"^segmentor\.model\.decode_head\.classifier\.":
                      "the segmentor's classifier, which DCFM's own head replaces"}

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, head: Head) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)
        if head.stage1_ch > self.segmentor.feature_channels[0]:
            raise ValueError(f"stage1_ch {head.stage1_ch} exceeds the first stage's "
                             f"{self.segmentor.feature_channels[0]} channels")
        # DCFM classifies with its own head: the segmentor's classifier is not part of it (nor of its weights).
        self.segmentor.model.decode_head.classifier = nn.Identity()
        self.decoder = DCFMDecoder(self.segmentor.config.decoder_hidden_size, num_classes, head)
        self._common: torch.Tensor | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    def reset(self) -> None:
        self._common = None

    def set_conventions(self, conventions: dict) -> None:
        """A converted checkpoint's numerical conventions (NVlabs's layer-norm epsilons) are its SegFormer's."""
        self.segmentor.set_conventions(conventions)

    # ----------------------------------------------------------------------- the two encoder paths

    def _first_block(self, frame: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Stage 1's patch embedding and first block: tokens (B, H/4 * W/4, C) and the grid's height, width."""
        stage = self.segmentor.model.segformer.stages[0]
        hidden, height, width = stage.patch_embeddings(frame)
        return stage.blocks[0](hidden, height, width), height, width

    def shallow(self, frame: torch.Tensor) -> torch.Tensor:
        """S: stage 1's patch embedding and first block (``B_forward``, ``stage1: vit1``), normalised."""
        hidden, height, width = self._first_block(frame)
        return l2_normalise(_as_map(hidden, height, width))

    def encode(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, S) of one full pass: S is taken inside stage 1, as the official forward hook takes it."""
        stage = self.segmentor.model.segformer.stages[0]
        hidden, height, width = self._first_block(frame)
        shallow = _as_map(hidden, height, width)
        for block in stage.blocks[1:]:
            hidden = block(hidden, height, width)
        features = [_as_map(stage.layer_norm(hidden), height, width).contiguous()]
        for later in self.segmentor.model.segformer.stages[1:]:
            features.append(later(features[-1]))
        high = self.segmentor.fuse(features)  # SegFormerHead's fused feature, then its Dropout2d (training only)
        high = F.dropout2d(high, self.segmentor.config.classifier_dropout_prob, self.training)
        return high, l2_normalise(shallow)

    # ----------------------------------------------------------------------- inference

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        if is_key or self._common is None:  # I_forward
            high, shallow = self.encode(frame)
            self._common = self.decoder.common(high)
        else:  # B_forward, then the fusion with the previous key frame's common feature
            shallow = self.shallow(frame)
        return self.decoder.classify(self.decoder.fused(self._common, shallow), frame.shape[-2:])

    # ----------------------------------------------------------------------- training

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``frames[:, 0]`` is the reference U, ``frames[:, 1]`` the labelled frame L."""
        reference, labelled = batch["frames"][:, 0], batch["frames"][:, 1]
        b = labelled.shape[0]
        high, shallow = self.encode(torch.cat([reference, labelled]))  # one batch, as DCFMEncoder runs it
        common = self.decoder.common(high)
        common_u, common_l, shallow_u, shallow_l = common[:b], common[b:], shallow[:b], shallow[b:]
        key_l = self.decoder.fused(common_l, shallow_l)  # feat_L_t
        nonkey_l = self.decoder.fused(common_u, shallow_l)  # feat_L_hat
        key_u = self.decoder.fused(common_u, shallow_u)  # feat_U_t
        pred_key_l, pred_nonkey_l = self.decoder.final(key_l), self.decoder.final(nonkey_l)
        agree = (pred_key_l.argmax(1) == self.decoder.final(key_u).argmax(1)).unsqueeze(1)
        label = batch["labels"][:, 1]
        return {
            "cross_entropy_key": cross_entropy(pred_key_l, label),
            "cross_entropy_nonkey": cross_entropy(pred_nonkey_l, label),
            "feature": F.mse_loss(key_l, nonkey_l),
            "consistency": F.mse_loss(key_l * agree, key_u * agree),
        }

    def loss_terms(self) -> tuple[str, ...]:
        return ("cross_entropy_key", "cross_entropy_nonkey", "feature", "consistency")


# --------------------------------------------------------------------------- the released weights


def from_official(state: dict[str, torch.Tensor]) -> Converted:
    """DCFM's two files (:func:`vssbench.methods.weights.read_source` reads ``encoder_epoch_N.pth`` and
    ``decoder_epoch_N.pth`` as ``encoder.*`` and ``decoder.*``, ``module.`` removed) -> this method's names.

    The encoder is NVlabs's SegFormer (``backbone.encoder`` the MiT, ``backbone.decoder`` its head, whose
    unused ``conv_seg`` is dropped); the decoder's ``ffm.convblk`` is the fusion module and ``final`` the
    head. A ``bot_aspp`` (the ResNet configs') has no counterpart and is reported as such."""
    encoder = {k.replace("backbone.encoder.", "backbone.", 1).replace("backbone.decoder.", "decode_head.", 1): v
               for k, v in strip_prefix(state, "encoder.").items()}
    converted = from_nvlabs(encoder)
    converted.state = {f"segmentor.{k}": v for k, v in converted.state.items()}
    decoder = rename(strip_prefix(state, "decoder."), [
        (r"^ffm\.convblk\.conv\.", "decoder.fusion.conv."),
        (r"^ffm\.convblk\.norm\.", "decoder.fusion.norm."),
        (r"^final\.", "decoder.final."),
    ])
    converted.state.update(decoder.state)
    for reason, keys in decoder.dropped.items():
        converted.dropped.setdefault(reason, []).extend(f"decoder.{k}" for k in keys)
    converted.state.update({k: v for k, v in state.items() if not k.startswith(("encoder.", "decoder."))})
    return converted
