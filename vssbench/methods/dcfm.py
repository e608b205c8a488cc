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

The ResNet configs (``backbone: pspnet18/50/101``) use hszhao/semseg's PSPNet without its classifier
as the encoder (:class:`PSPEncoder`): F is the pyramid pooling's output (twice the last stage's
channels, at 1/8) and S the output of ResNet's first stage (``layer1``, at 1/4, resized to F's size
before the fusion); a non-key frame runs the stem and that stage only. Their ``bot_ch`` 1x1 conv
(``bot_aspp``, no bias) narrows F before it is normalised; the MiT configs set ``bot_ch: -1`` (none).

Head (``final``, ``make_seg_head``): ``head_nums`` 0 is dropout and a 1x1 conv without bias (the VSPW
configs); 1 adds a 1x1 conv, batch norm and ReLU before them (Cityscapes, CamVid).

Test-time protocol (variants, data: :class:`Protocol`), as ``process/video_test.py`` runs:

* ``default``: its ``val_pos: False``: a non-key frame uses the previous key frame only; key frames at
  t = 0, k, 2k, ... of every video, the runner's causal schedule shared by every method.
* ``official``: its default, ``val_pos: True``: each key frame is computed before the frames between it
  and the previous one (the runner's ``key_lookahead`` order), and a non-key frame sums the logits of its
  fusion with the previous and with the next key frame's common feature (``merge``), each upsampled to
  the frame first; frames before a video's first key frame have only the next, frames after its last
  only the previous. The first key frame of the v-th video is frame v mod k (``self.st``).

Both share their weights. Resize and scoring are the dataset's: logits upsampled bilinearly to the
label; the official mIoU averaging is ``--miou-mode all``; docs/methods.md says where the official
test resizes otherwise.

Training (``loss``, DCFMDecoder's forward and the losses of ``exp/*/dcfm/*/config.yaml``): a labelled
frame L and a reference frame U. ``cross_entropy_key``: the cross-entropy of L's key-path prediction
norm(FFM(F_L, S_L)); ``cross_entropy_nonkey``: of L predicted through U's common feature,
norm(FFM(F_U, S_L)), the non-key path; ``feature``: the MSE between the two features (weight 0 in
every official config); ``consistency``: the MSE between L's and U's key-path features where their
predicted classes agree (weight 10). The recipes weight the four terms as the configs do (1, 0.4, 0,
10). Training resizes S to F's size before normalising it, the test paths after (a ResNet's S is at
1/4, F at 1/8; for MiT they coincide).

Presets, as the released configs: ``mitb1``, ``resnet18``, ``resnet50``, ``resnet101`` (Cityscapes;
``resnet50`` is also CamVid's), ``mitb2`` and ``mitb5`` (VSPW); and ``tiny`` (SegFormer-tiny, head 64
wide, 8 channels of S) for the synthetic set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import KeySchedule, VideoMethod, register_method
from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors import SegFormer, build_segmentor, cross_entropy
from vssbench.methods.segmentors.pspnet import RESNET_V1C_RULES, DilatedResNet, PyramidPooling
from vssbench.methods.segmentors.segformer import from_nvlabs


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, p=2, dim=1)


def _as_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H * W, C) tokens -> a (B, C, H, W) map."""
    return tokens.reshape(tokens.shape[0], height, width, -1).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class Protocol:
    """Which key frames a non-key frame fuses with (``val_pos``) and where each video's first key frame is."""

    next_key: bool  # also the next key frame, the logits summed (val_pos: True)
    rotate_start: bool  # the v-th video's first key frame is frame v mod k


PROTOCOLS = {"default": Protocol(next_key=False, rotate_start=False),
             "official": Protocol(next_key=True, rotate_start=True)}


@dataclass(frozen=True)
class Head:
    """DCFM's decoder settings (the ``decoder`` args of ``exp/*/dcfm/*/infer.yaml``)."""

    stage1_ch: int  # channels of S used by the fusion
    head_nums: int = 0  # 0: dropout, 1x1 conv; 1: 1x1 conv, batch norm, ReLU first
    dropout: float = 0.1
    bot_ch: int = -1  # the 1x1 conv narrowing F to this width (bot_aspp); -1: none


# DCFM's ``pspnet*`` encoders: hszhao/semseg's dilated ResNets (nets/pspnet/resnet.py; ResNet-18 with the
# 7x7 stem, ``deep_base=False``; 50 and 101 with the deep stem, 64, 64, 128 wide).
RESNETS = {
    "r18": dict(block="basic", depths=[2, 2, 2, 2], widths=[64, 128, 256, 512], stem_width=64, stem="7x7"),
    "r50": dict(block="bottleneck", depths=[3, 4, 6, 3], widths=[64, 128, 256, 512], stem_width=128),
    "r101": dict(block="bottleneck", depths=[3, 4, 23, 3], widths=[64, 128, 256, 512], stem_width=128),
}


class PSPEncoder(nn.Module):
    """semseg's PSPNet without its classifier (``nets/pspnet/main.py``, ``use_ppm`` True): a dilated ResNet
    at output stride 8 and pyramid pooling at bins 1, 2, 3, 6 (each branch a quarter of the map's width,
    upsampled with aligned corners), concatenated with the map."""

    def __init__(self, resnet: dict) -> None:
        super().__init__()
        self.resnet = DilatedResNet(**resnet, output_stride=8, style="semseg")
        width = self.resnet.out_channels
        self.ppm = PyramidPooling(width, width // 4, align_corners=True)
        self.out_channels = 2 * width
        self.stage1_channels = resnet["widths"][0] * (4 if resnet["block"] == "bottleneck" else 1)

    def stage1(self, frame: torch.Tensor) -> torch.Tensor:
        """``layer0`` and ``layer1``: the stem and the first stage, at 1/4 (S, and ``B_forward``)."""
        return self.resnet.stages[0](self.resnet.stem(frame))

    def rest(self, stage1: torch.Tensor) -> torch.Tensor:
        """Stages 2-4 and the pyramid pooling: F at 1/8."""
        x = stage1
        for stage in self.resnet.stages[1:]:
            x = stage(x)
        return self.ppm(x)


class FeatureFusion(nn.Module):
    """FFM: [F, S[:, :stage1_ch]] -> 1x1 conv (with bias) -> batch norm -> ReLU, ``out`` channels."""

    def __init__(self, high: int, stage1_ch: int) -> None:
        super().__init__()
        self.stage1_ch = stage1_ch
        self.conv = nn.Conv2d(high + stage1_ch, high, 1)
        self.norm = nn.BatchNorm2d(high)

    @staticmethod
    def aligned(shallow: torch.Tensor, common: torch.Tensor) -> torch.Tensor:
        """S resized (bilinear) to F's size where they differ (``align_shape``; a ResNet's S is at 1/4, F at 1/8)."""
        if shallow.shape[-2:] == common.shape[-2:]:
            return shallow
        return F.interpolate(shallow, size=common.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, common: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        shallow = self.aligned(shallow, common)
        return F.relu(self.norm(self.conv(torch.cat([common, shallow[:, : self.stage1_ch]], dim=1))))


class DCFMDecoder(nn.Module):
    """The fusion module and the segmentation head."""

    def __init__(self, high: int, num_classes: int, head: Head) -> None:
        super().__init__()
        # bot_aspp: the ResNet configs narrow F; the MiT configs (bot_ch -1) use F as the SegFormer gives it.
        width = head.bot_ch if head.bot_ch > 0 else high
        self.bottleneck = nn.Conv2d(high, width, 1, bias=False) if head.bot_ch > 0 else nn.Identity()
        self.fusion = FeatureFusion(width, head.stage1_ch)
        layers: list[nn.Module] = []
        if head.head_nums == 1:
            layers += [nn.Conv2d(width, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        elif head.head_nums != 0:
            raise ValueError(f"head_nums {head.head_nums}: expected 0 or 1 (the released configs)")
        layers += [nn.Dropout2d(head.dropout), nn.Conv2d(width, num_classes, 1, bias=False)]
        self.final = nn.Sequential(*layers)

    def common(self, high: torch.Tensor) -> torch.Tensor:
        """The common feature kept from a key frame: norm(F), F narrowed first where the config says."""
        return l2_normalise(self.bottleneck(high))

    def fused(self, common: torch.Tensor, shallow: torch.Tensor) -> torch.Tensor:
        """norm(FFM(common, S)), S already normalised."""
        return l2_normalise(self.fusion(common, shallow))

    def classify(self, feature: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.final(feature), size=size, mode="bilinear", align_corners=False)


@register_method("dcfm")
class DCFM(VideoMethod):
    """Common features from key frames, fused with every frame's own shallow feature."""

    presets = {  # exp/<dataset>/dcfm/<preset>/infer.yaml; stage1_ch 128 where a config leaves DCFMDecoder's default
        "tiny": dict(segmentor="segformer-tiny", head=Head(stage1_ch=8)),
        "mitb1": dict(segmentor="segformer-b1", head=Head(stage1_ch=32, head_nums=1)),
        "mitb2": dict(segmentor="segformer-b2-d256", head=Head(stage1_ch=32)),
        "mitb5": dict(segmentor="segformer-b5-d256", head=Head(stage1_ch=32)),
        "resnet18": dict(resnet="r18", head=Head(stage1_ch=32, head_nums=1, bot_ch=320)),
        "resnet50": dict(resnet="r50", head=Head(stage1_ch=128, head_nums=1, bot_ch=1280)),
        "resnet101": dict(resnet="r101", head=Head(stage1_ch=128, head_nums=1, bot_ch=1280)),
    }
    default_preset = "tiny"
    variants = tuple(PROTOCOLS)
    unused_weights = {r"^segmentor\.model\.decode_head\.classifier\.":
                      "the segmentor's classifier, which DCFM's own head replaces"}

    def __init__(self, preset: str, variant: str, num_classes: int, head: Head, segmentor: str | None = None,
                 resnet: str | None = None) -> None:
        super().__init__(preset, variant, num_classes)
        self.protocol = PROTOCOLS[variant]
        self.encoder: PSPEncoder | None = None
        if resnet is not None:  # a PSPNet encoder; timed against the per-frame PSPNet of the same depth
            self.encoder = PSPEncoder(resnet if isinstance(resnet, dict) else RESNETS[resnet])
            self._segmentor_preset = f"pspnet-{resnet}" if isinstance(resnet, str) else None
            high, stage1 = self.encoder.out_channels, self.encoder.stage1_channels
        else:  # the SegFormer's MiT and all-MLP decoder
            self._segmentor_preset = segmentor
            self.segmentor: SegFormer = build_segmentor(segmentor, num_classes)
            # DCFM classifies with its own head: the segmentor's classifier is not part of it (nor of its weights).
            self.segmentor.model.decode_head.classifier = nn.Identity()
            high, stage1 = self.segmentor.config.decoder_hidden_size, self.segmentor.feature_channels[0]
        if head.stage1_ch > stage1:
            raise ValueError(f"stage1_ch {head.stage1_ch} exceeds the first stage's {stage1} channels")
        self.decoder = DCFMDecoder(high, num_classes, head)
        # The common features of the key frames before and after the frames being stepped (I_feats[pre_I],
        # I_feats[pos_I]); ``default`` keeps only the one before.
        self._previous: torch.Tensor | None = None
        self._next: torch.Tensor | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    @property
    def checkpoint_variant(self) -> str:
        return "default"  # the protocols differ at test time only

    @property
    def key_lookahead(self) -> bool:
        return self.protocol.next_key

    def key_schedule(self, interval: int) -> KeySchedule:
        return KeySchedule(interval, rotate=self.protocol.rotate_start)

    def reset(self) -> None:
        self._previous = self._next = None

    def no_next_key(self) -> None:
        self._previous, self._next = self._next, None

    def weight_components(self) -> dict[str, str]:
        """A ResNet preset's PSPNet encoder loads as one part; a MiT preset's SegFormer as the segmentor."""
        return {"encoder": "encoder"} if self.encoder is not None else super().weight_components()

    def set_conventions(self, conventions: dict) -> None:
        """A converted checkpoint's numerical conventions (NVlabs's layer-norm epsilons) are its SegFormer's."""
        if self.encoder is None:
            self.segmentor.set_conventions(conventions)

    # ----------------------------------------------------------------------- the two encoder paths

    def _first_block(self, frame: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Stage 1's patch embedding and first block: tokens (B, H/4 * W/4, C) and the grid's height, width."""
        stage = self.segmentor.model.segformer.stages[0]
        hidden, height, width = stage.patch_embeddings(frame)
        return stage.blocks[0](hidden, height, width), height, width

    def shallow(self, frame: torch.Tensor) -> torch.Tensor:
        """S alone (``B_forward``), normalised: MiT's patch embedding and first block (``stage1: vit1``), or
        ResNet's stem and first stage."""
        if self.encoder is not None:
            return l2_normalise(self.encoder.stage1(frame))
        hidden, height, width = self._first_block(frame)
        return l2_normalise(_as_map(hidden, height, width))

    def encode(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F, S) of one full pass, neither normalised: S is taken inside the encoder, as the official forward
        hook takes it."""
        if self.encoder is not None:
            shallow = self.encoder.stage1(frame)
            return self.encoder.rest(shallow), shallow
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
        return high, shallow

    # ----------------------------------------------------------------------- inference

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        size = frame.shape[-2:]
        if is_key or (self._previous is None and self._next is None):  # I_forward
            high, shallow = self.encode(frame)
            common, shallow = self.decoder.common(high), l2_normalise(shallow)  # normalised, then resized by FFM
            if self.protocol.next_key:  # stepped before the frames between it and the previous key frame
                self._previous, self._next = self._next, common
            else:
                self._previous = common
            return self.decoder.classify(self.decoder.fused(common, shallow), size)
        shallow = self.shallow(frame)  # B_forward, fused with each key frame's common feature, logits summed
        commons = [c for c in (self._previous, self._next) if c is not None]
        return sum(self.decoder.classify(self.decoder.fused(c, shallow), size) for c in commons)

    def cost_paths(self, frame: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
        """As the default's, after two key frames: an ``official`` non-key frame fuses with both."""
        self.reset()
        self.step(frame, True)
        self.step(frame, True)
        return {"key": lambda: self.step(frame, True), "nonkey": lambda: self.step(frame, False)}

    # ----------------------------------------------------------------------- training

    def training_features(self, reference: torch.Tensor, labelled: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """DCFMDecoder's training forward on (U, L): feat_L_t (L's key path), feat_L_hat (L through U's common
        feature) and feat_U_t. Unlike the test paths it resizes S to F's size before normalising it."""
        b = labelled.shape[0]
        high, shallow = self.encode(torch.cat([reference, labelled]))  # one batch [U, L], as DCFMEncoder runs it
        common = self.decoder.common(high)
        shallow = l2_normalise(self.decoder.fusion.aligned(shallow, common))
        common_u, common_l, shallow_u, shallow_l = common[:b], common[b:], shallow[:b], shallow[b:]
        key_l = self.decoder.fused(common_l, shallow_l)
        nonkey_l = self.decoder.fused(common_u, shallow_l)
        key_u = self.decoder.fused(common_u, shallow_u)
        return key_l, nonkey_l, key_u

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``frames[:, 0]`` is the reference U, ``frames[:, 1]`` the labelled frame L."""
        key_l, nonkey_l, key_u = self.training_features(batch["frames"][:, 0], batch["frames"][:, 1])
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


# semseg's PSPNet (``backbone.*`` of a ``pspnet*`` encoder) -> PSPEncoder. Its ``layer0`` holds the stem as
# mmseg's ResNetV1c ``stem`` does (conv, bn at 0, 1; a deep stem's second and third at 3, 4 and 6, 7), so
# ResNetV1c's rules map the ResNet once ``layer0`` is renamed; a pooling branch's conv and bn sit at 1, 2.
_PSPNET_RULES = [
    (r"^layer0\.", "stem."), *RESNET_V1C_RULES, (r"^(stem|stages)\.", r"resnet.\1."),
    (r"^ppm\.features\.(\d)\.1\.", lambda m: f"ppm.branches.{m.group(1)}.1.0."),
    (r"^ppm\.features\.(\d)\.2\.", lambda m: f"ppm.branches.{m.group(1)}.1.1."),
]


def from_official(state: dict[str, torch.Tensor]) -> Converted:
    """DCFM's two files (:func:`vssbench.methods.weights.read_source` reads ``encoder_epoch_N.pth`` and
    ``decoder_epoch_N.pth`` as ``encoder.*`` and ``decoder.*``, ``module.`` removed) -> this method's names.

    A MiT encoder is NVlabs's SegFormer (``backbone.encoder`` the MiT, ``backbone.decoder`` its head, whose
    unused ``conv_seg`` is dropped); a ``pspnet*`` encoder is semseg's PSPNet (``backbone.layer0..4``,
    ``backbone.ppm``). The decoder's ``bot_aspp`` is the bottleneck, ``ffm.convblk`` the fusion module and
    ``final`` the head."""
    encoder_state = strip_prefix(state, "encoder.")
    if any(k.startswith("backbone.layer0.") for k in encoder_state):
        converted = rename(strip_prefix(encoder_state, "backbone."), _PSPNET_RULES)
        converted.state = {f"encoder.{k}": v for k, v in converted.state.items()}
    else:
        encoder = {k.replace("backbone.encoder.", "backbone.", 1).replace("backbone.decoder.", "decode_head.", 1): v
                   for k, v in encoder_state.items()}
        converted = from_nvlabs(encoder)
        converted.state = {f"segmentor.{k}": v for k, v in converted.state.items()}
    decoder = rename(strip_prefix(state, "decoder."), [
        (r"^bot_aspp\.", "decoder.bottleneck."),
        (r"^ffm\.convblk\.conv\.", "decoder.fusion.conv."),
        (r"^ffm\.convblk\.norm\.", "decoder.fusion.norm."),
        (r"^final\.", "decoder.final."),
    ])
    converted.state.update(decoder.state)
    for reason, keys in decoder.dropped.items():
        converted.dropped.setdefault(reason, []).extend(f"decoder.{k}" for k in keys)
    converted.state.update({k: v for k, v in state.items() if not k.startswith(("encoder.", "decoder."))})
    return converted
