"""Mask2Former (Cheng et al., CVPR 2022) with a ResNet or Swin backbone.

Hugging Face ``Mask2FormerForUniversalSegmentation``, built from a config; features = the pixel
decoder's mask features and its three multi-scale maps, head = the masked-attention transformer
decoder. Semantic scores follow detectron2's ``semantic_inference``: softmax class probabilities
(minus "no object") times sigmoid masks upsampled to the image, summed over queries.

Input padding, as detectron2's ``MaskFormer`` (``SIZE_DIVISIBILITY: 32``) and Hugging Face's image
processor pad: the normalised frame is zero-padded at the bottom and right to a multiple of 32, the
masks are upsampled to the padded size and the semantic map is cropped back to the frame
(``sem_seg_postprocess``). A frame whose sides are multiples of 32 is computed unchanged.

Weights (portable names are the Hugging Face hub's, see :mod:`vssbench.methods.weights`):
detectron2 / facebookresearch Mask2Former / ziplab MPVSS checkpoints (:func:`from_detectron2`) and,
for the backbone, ImageNet Swin (official ``.pth``, :func:`backbone_from_official_swin`; Hugging
Face, :func:`backbone_from_hf_classifier`) and ResNet (torchvision state dicts,
:func:`backbone_from_torchvision`; detectron2 ``R-50.pkl``, :func:`backbone_from_detectron2`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig, SwinConfig

from vssbench.datasets.base import IGNORE_INDEX
from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors.base import ImageSegmentor, pad_to_multiple

SIZE_DIVISIBILITY = 32


@dataclass
class Mask2FormerOutput:
    """Everything Mask2Former's head produces for one batch (last decoder layer unless noted)."""

    semantic: torch.Tensor  # (B, C, H, W) semantic scores at the requested size
    class_logits: torch.Tensor  # (B, Q, C + 1), the last class is "no object"
    mask_logits: torch.Tensor  # (B, Q, H'/4, W'/4), H' x W' the frame padded to a multiple of 32
    query_embeddings: torch.Tensor  # (B, Q, D) decoder output of the last layer
    class_logits_per_layer: tuple[torch.Tensor, ...]  # every layer, for the deep-supervised set loss
    mask_logits_per_layer: tuple[torch.Tensor, ...]


class Mask2Former(ImageSegmentor):
    """Mask2Former: backbone + multi-scale deformable pixel decoder + masked-attention decoder."""

    backbone_path = "model.model.pixel_level_module.encoder"
    classifier_prefixes = ("model.class_predictor.",)
    classifier_extra_outputs = 1
    size_divisibility = SIZE_DIVISIBILITY

    def __init__(self, num_classes: int, backbone: dict, **config: object) -> None:
        super().__init__(num_classes)
        backbone = dict(backbone)
        backbone_type = backbone.pop("type")
        out_features = ["stage1", "stage2", "stage3", "stage4"]
        backbone_config = (
            ResNetConfig(out_features=out_features, **backbone)
            if backbone_type == "resnet"
            else SwinConfig(out_features=out_features, **backbone)
        )
        self.config = Mask2FormerConfig(backbone_config=backbone_config, num_labels=num_classes, **config)
        self.model = Mask2FormerForUniversalSegmentation(self.config)

    @property
    def learned_queries(self) -> torch.Tensor:
        """The decoder's N learned query features (Q, D), which MPVSS uses to initialise flow queries."""
        return self.model.model.transformer_module.queries_features.weight

    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        pixel_level = self.model.model.pixel_level_module(pad_to_multiple(image, self.size_divisibility))
        # [mask features (1/4), multi-scale maps (1/32, 1/16, 1/8)]
        return [pixel_level.decoder_last_hidden_state, *pixel_level.decoder_hidden_states]

    def decode_queries(self, features: list[torch.Tensor], size: tuple[int, int],
                       image_size: tuple[int, int] | None = None) -> Mask2FormerOutput:
        mask_features, multi_scale = features[0], list(features[1:])
        decoded = self.model.model.transformer_module(
            multi_scale_features=multi_scale, mask_features=mask_features, output_hidden_states=True
        )
        class_logits = tuple(self.model.class_predictor(h.transpose(0, 1)) for h in decoded.intermediate_hidden_states)
        masks = tuple(decoded.masks_queries_logits)
        return Mask2FormerOutput(
            semantic=semantic_from_masks(class_logits[-1], masks[-1], size, image_size),
            class_logits=class_logits[-1],
            mask_logits=masks[-1],
            query_embeddings=decoded.intermediate_hidden_states[-1].transpose(0, 1),
            class_logits_per_layer=class_logits,
            mask_logits_per_layer=masks,
        )

    def decode(self, features: list[torch.Tensor], size: tuple[int, int],
               image_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.decode_queries(features, size, image_size).semantic

    def set_loss(
        self,
        class_logits_per_layer: tuple[torch.Tensor, ...],
        mask_logits_per_layer: tuple[torch.Tensor, ...],
        label: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Mask2Former's Hungarian-matched set loss with deep supervision over every decoder layer:
        ``class``, ``mask`` and ``dice``, each summed over the layers and unweighted. The recipe's
        ``loss_weights`` weight them (Mask2Former: 2, 5, 5); the matcher's costs are the config's
        ``class_weight``, ``mask_weight`` and ``dice_weight`` (the same 2, 5, 5), part of the model.
        """
        # Labels padded as the input was: the padding belongs to no class (detectron2 pads target masks with 0).
        padded = tuple(4 * side for side in mask_logits_per_layer[-1].shape[-2:])
        label = F.pad(label, (0, padded[1] - label.shape[-1], 0, padded[0] - label.shape[-2]), value=IGNORE_INDEX)
        mask_labels, class_labels = semantic_to_set_targets(label)
        auxiliary = [
            {"masks_queries_logits": masks, "class_queries_logits": classes}
            for masks, classes in zip(mask_logits_per_layer[:-1], class_logits_per_layer[:-1])
        ]
        terms = self.model.criterion(
            masks_queries_logits=mask_logits_per_layer[-1], class_queries_logits=class_logits_per_layer[-1],
            mask_labels=mask_labels, class_labels=class_labels, auxiliary_predictions=auxiliary,
        )
        return {
            "class": sum(v for k, v in terms.items() if k.startswith("loss_cross_entropy")),
            "mask": sum(v for k, v in terms.items() if k.startswith("loss_mask")),
            "dice": sum(v for k, v in terms.items() if k.startswith("loss_dice")),
        }

    head_modules = ("model.model.transformer_module", "model.class_predictor")
    loss_terms = ("class", "mask", "dice")

    @property
    def feature_channels(self) -> list[int]:
        return [self.config.mask_feature_size] + [self.config.feature_size] * 3

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        output = self.decode_queries(features, label.shape[-2:])
        return self.set_loss(output.class_logits_per_layer, output.mask_logits_per_layer, label)


def semantic_from_masks(class_logits: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int],
                        image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """detectron2's semantic inference: sum_q softmax(class_q)[:C] * sigmoid(mask_q), at ``size``.

    ``mask_logits`` cover the frame of ``image_size`` (default ``size``) padded to a multiple of 32.
    At the frame's own size this is detectron2's computation: masks upsampled to the padded size,
    cropped to the frame. At another size (Accel fuses at 1/4) the masks are cropped on their own
    grid, to the cells the frame covers, and resized to ``size``: within a mask cell of that.
    """
    image_size = tuple(image_size or size)
    padded = tuple(4 * side for side in mask_logits.shape[-2:])
    if padded == image_size:
        masks = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    elif tuple(size) == image_size:
        masks = F.interpolate(mask_logits, size=padded, mode="bilinear", align_corners=False)
        masks = masks[..., : size[0], : size[1]]
    else:
        cells = [-(-side // 4) for side in image_size]
        masks = F.interpolate(mask_logits[..., : cells[0], : cells[1]], size=size, mode="bilinear",
                              align_corners=False)
    probabilities = class_logits.softmax(-1)[..., :-1]
    return torch.einsum("bqc,bqhw->bchw", probabilities, masks.sigmoid())


def semantic_to_set_targets(label: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(B, H, W) label maps -> per image, one binary mask and one class id per present class."""
    mask_labels, class_labels = [], []
    for image_label in label:
        classes = image_label.unique()
        classes = classes[classes != IGNORE_INDEX]
        mask_labels.append((image_label[None] == classes[:, None, None]).float())
        class_labels.append(classes)
    return mask_labels, class_labels


_RESNET50 = dict(type="resnet", layer_type="bottleneck", depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048])
_RESNET101 = dict(_RESNET50, depths=[3, 4, 23, 3])


def _swin(embed_dim: int, depths: list[int], heads: list[int], window: int = 7) -> dict:
    return dict(type="swin", embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window,
                drop_path_rate=0.3)


# Paper architecture: 100 queries, hidden 256, 8 heads, FFN 2048, 9 decoder layers (HF counts
# `decoder_layers` = 10 including the initial prediction), 6 deformable pixel-decoder layers.
_PAPER_DECODER = dict(num_queries=100, hidden_dim=256, num_attention_heads=8, dim_feedforward=2048,
                      decoder_layers=10, encoder_layers=6)
MASK2FORMER_PRESETS = {
    "mask2former-r50": dict(backbone=_RESNET50, **_PAPER_DECODER),
    "mask2former-r101": dict(backbone=_RESNET101, **_PAPER_DECODER),
    "mask2former-swin-t": dict(backbone=_swin(96, [2, 2, 6, 2], [3, 6, 12, 24]), **_PAPER_DECODER),
    "mask2former-swin-s": dict(backbone=_swin(96, [2, 2, 18, 2], [3, 6, 12, 24]), **_PAPER_DECODER),
    "mask2former-swin-b": dict(backbone=_swin(128, [2, 2, 18, 2], [4, 8, 16, 32], window=12), **_PAPER_DECODER),
    "mask2former-swin-l": dict(backbone=_swin(192, [2, 2, 18, 2], [6, 12, 24, 48], window=12), **_PAPER_DECODER),
    "mask2former-tiny": dict(
        backbone=dict(type="resnet", layer_type="basic", embedding_size=16, depths=[1, 1, 1, 1],
                      hidden_sizes=[16, 32, 64, 128]),
        feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=64, dim_feedforward=64,
        encoder_layers=1, decoder_layers=3, num_attention_heads=2, num_queries=16, train_num_points=2048,
    ),
}


# --------------------------------------------------------------------------- weights
# Portable names are the Hugging Face hub's: model.pixel_level_module.{encoder,decoder}, model.transformer_module,
# class_predictor.

_BACKBONE = "model.model.pixel_level_module.encoder."
_PIXEL_DECODER = "model.model.pixel_level_module.decoder."
_DECODER = "model.model.transformer_module."


def _split_qkv(converted: Converted, prefix: str, tensor: torch.Tensor, kind: str, names: tuple[str, str, str]) -> None:
    for name, part in zip(names, tensor.chunk(3, dim=0)):
        converted.state[f"{prefix}{name}.{kind}"] = part


def _swin_rules() -> list[tuple[str, str]]:
    return [
        (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
        (r"^patch_embed\.norm\.", "embeddings.norm."),
        (r"^layers\.(\d+)\.blocks\.(\d+)\.", r"encoder.layers.\1.blocks.\2."),
        (r"^layers\.(\d+)\.downsample\.", r"encoder.layers.\1.downsample."),
        (r"\.norm1\.", ".layernorm_before."), (r"\.norm2\.", ".layernorm_after."),
        (r"\.attn\.relative_position_bias_table$", ".attention.self.relative_position_bias_table"),
        (r"\.attn\.proj\.", ".attention.output.dense."),
        (r"\.mlp\.fc1\.", ".intermediate.dense."), (r"\.mlp\.fc2\.", ".output.dense."),
        (r"^norm(\d)\.", lambda m: f"hidden_states_norms.stage{int(m.group(1)) + 1}."),
    ]


def _swin(state: dict[str, torch.Tensor], drop: dict[str, str]) -> Converted:
    """Official/detectron2 Swin keys (``patch_embed``, ``layers.i.blocks.j.attn.qkv``, ``norm{i}``) -> SwinBackbone."""
    fused = {k: v for k, v in state.items() if re.search(r"\.attn\.qkv\.(weight|bias)$", k)}
    converted = rename({k: v for k, v in state.items() if k not in fused}, _swin_rules(), drop={
        r"\.relative_position_index$": "relative position indices (recomputed from the window size)",
        r"\.attn_mask$": "shifted-window attention masks (recomputed from the input size)",
        **drop})
    for key, tensor in fused.items():
        match = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        prefix = f"encoder.layers.{match.group(1)}.blocks.{match.group(2)}.attention.self."
        _split_qkv(converted, prefix, tensor, match.group(3), ("query", "key", "value"))
    converted.state = {_BACKBONE + k: v for k, v in converted.state.items()}
    return converted


def _resnet(state: dict[str, torch.Tensor], rules: list[tuple[str, str]], drop: dict[str, str]) -> Converted:
    converted = rename(state, rules, drop=drop)
    converted.state = {_BACKBONE + k: v for k, v in converted.state.items()}
    return converted


# detectron2's ResNet: stem.conv1(.norm), res{2..5}.i.conv{1..3}(.norm), res{n}.i.shortcut(.norm).
_DETECTRON2_RESNET_RULES = [
    (r"^stem\.conv1\.norm\.", "embedder.embedder.normalization."),
    (r"^stem\.conv1\.", "embedder.embedder.convolution."),
    (r"^res(\d)\.(\d+)\.", lambda m: f"encoder.stages.{int(m.group(1)) - 2}.layers.{m.group(2)}."),
    (r"\.conv(\d)\.norm\.", lambda m: f".layer.{int(m.group(1)) - 1}.normalization."),
    (r"\.conv(\d)\.(weight|bias)$", lambda m: f".layer.{int(m.group(1)) - 1}.convolution.{m.group(2)}"),
    (r"\.shortcut\.norm\.", ".shortcut.normalization."),
    (r"\.shortcut\.(weight|bias)$", r".shortcut.convolution.\1"),
]
# torchvision's ResNet: conv1, bn1, layer{1..4}.i.conv{k}/bn{k}, layer{n}.i.downsample.{0,1}, fc.
_TORCHVISION_RESNET_RULES = [
    (r"^conv1\.", "embedder.embedder.convolution."),
    (r"^bn1\.", "embedder.embedder.normalization."),
    (r"^layer(\d)\.(\d+)\.", lambda m: f"encoder.stages.{int(m.group(1)) - 1}.layers.{m.group(2)}."),
    (r"\.conv(\d)\.", lambda m: f".layer.{int(m.group(1)) - 1}.convolution."),
    (r"\.bn(\d)\.", lambda m: f".layer.{int(m.group(1)) - 1}.normalization."),
    (r"\.downsample\.0\.", ".shortcut.convolution."),
    (r"\.downsample\.1\.", ".shortcut.normalization."),
]


def backbone_from_detectron2(state: dict[str, torch.Tensor]) -> Converted:
    """A detectron2 ResNet (``R-50.pkl`` converted from torchvision, as Mask2Former's configs load) or Swin
    (``backbone.*`` of a D2SwinTransformer) -> the Mask2Former backbone."""
    if any(k.startswith("patch_embed.") for k in state):
        return _swin(state, drop={})
    return _resnet(state, _DETECTRON2_RESNET_RULES, drop={r"^(stem\.)?fc\d*\.|^linear\.": "ImageNet classifier"})


def backbone_from_torchvision(state: dict[str, torch.Tensor]) -> Converted:
    """A torchvision-format ResNet state dict (read as tensors; stride in the 3x3 conv, as Mask2Former's
    ``STRIDE_IN_1X1: False``) -> the Mask2Former ResNet backbone."""
    return _resnet(state, _TORCHVISION_RESNET_RULES, drop={r"^fc\.": "ImageNet classifier"})


_NEW_OUTPUT_NORMS = r"pixel_level_module\.encoder\.hidden_states_norms\."


def backbone_from_official_swin(state: dict[str, torch.Tensor]) -> Converted:
    """microsoft/Swin-Transformer's ImageNet checkpoint (``{"model": ...}``) -> the Mask2Former Swin backbone.
    Its per-stage output norms are new (the classifier has one final ``norm``), as in Mask2Former."""
    converted = _swin(state, drop={r"^head\.": "ImageNet classifier", r"^norm\.": "classifier's final norm"})
    converted.new.append(_NEW_OUTPUT_NORMS)
    return converted


def backbone_from_hf_classifier(state: dict[str, torch.Tensor]) -> Converted:
    """A Hugging Face Swin or ResNet classifier (``swin.*`` / ``resnet.*``, hub names) -> the backbone."""
    converted = rename(state, [(r"^(swin|resnet)\.", "")], drop={
        r"^classifier\.": "ImageNet classifier", r"^swin\.layernorm\.": "classifier's final norm",
        r"^(swin|resnet)\.pooler\.": "classifier's pooling"})
    converted.state = {_BACKBONE + k: v for k, v in converted.state.items()}
    if any(k.startswith("swin.") for k in state):
        converted.new.append(_NEW_OUTPUT_NORMS)
    return converted


_PIXEL_DECODER_RULES = [
    (r"^adapter_1\.norm\.", "adapter_1.1."), (r"^adapter_1\.(weight|bias)$", r"adapter_1.0.\1"),
    (r"^layer_1\.norm\.", "layer_1.1."), (r"^layer_1\.(weight|bias)$", r"layer_1.0.\1"),
    (r"^input_proj\.", "input_projections."),
    (r"^transformer\.level_embed$", "level_embed"),
    (r"^transformer\.encoder\.layers\.", "encoder.layers."),
    (r"\.linear1\.", ".fc1."), (r"\.linear2\.", ".fc2."),
    (r"\.norm1\.", ".self_attn_layer_norm."), (r"\.norm2\.", ".final_layer_norm."),
    (r"^mask_features\.", "mask_projection."),
]
_DECODER_RULES = [
    (r"^transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.", r"decoder.layers.\1.self_attn.out_proj."),
    (r"^transformer_self_attention_layers\.(\d+)\.norm\.", r"decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer_cross_attention_layers\.(\d+)\.multihead_attn\.", r"decoder.layers.\1.cross_attn."),
    (r"^transformer_cross_attention_layers\.(\d+)\.norm\.", r"decoder.layers.\1.cross_attn_layer_norm."),
    (r"^transformer_ffn_layers\.(\d+)\.linear1\.", r"decoder.layers.\1.fc1."),
    (r"^transformer_ffn_layers\.(\d+)\.linear2\.", r"decoder.layers.\1.fc2."),
    (r"^transformer_ffn_layers\.(\d+)\.norm\.", r"decoder.layers.\1.final_layer_norm."),
    (r"^decoder_norm\.", "decoder.layernorm."),
    (r"^query_feat\.", "queries_features."), (r"^query_embed\.", "queries_embedder."),
    (r"^level_embed\.", "level_embed."),
    (r"^mask_embed\.layers\.(\d+)\.", r"decoder.mask_predictor.mask_embedder.\1.0."),
]


def from_detectron2(state: dict[str, torch.Tensor]) -> Converted:
    """A detectron2 Mask2Former (facebookresearch/Mask2Former, or ziplab/MPVSS, whose Mask2Former part has
    the same names) -> Mask2Former. MPVSS's own modules (its motion encoder and decoder) are dropped with a
    note: MPVSS released no weights, so no layout of them is known to map."""
    converted = backbone_from_detectron2(strip_prefix(state, "backbone."))
    pixel = rename(strip_prefix(state, "sem_seg_head.pixel_decoder."), _PIXEL_DECODER_RULES)
    converted.state.update({_PIXEL_DECODER + k: v for k, v in pixel.state.items()})
    predictor = strip_prefix(state, "sem_seg_head.predictor.")
    fused = {k: v for k, v in predictor.items() if re.search(r"self_attn\.in_proj_(weight|bias)$", k)}
    decoder = rename({k: v for k, v in predictor.items() if k not in fused and not k.startswith("class_embed.")},
                     _DECODER_RULES)
    for key, tensor in fused.items():
        match = re.match(r"transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", key)
        _split_qkv(decoder, f"decoder.layers.{match.group(1)}.self_attn.", tensor, match.group(2),
                   ("q_proj", "k_proj", "v_proj"))
    converted.state.update({_DECODER + k: v for k, v in decoder.state.items()})
    converted.state.update({f"model.class_predictor.{k[len('class_embed.'):]}": v for k, v in predictor.items()
                            if k.startswith("class_embed.")})
    for key, tensor in state.items():
        if key.startswith("criterion."):
            converted.state[f"model.{key}"] = tensor  # the "no object" class weight of the loss
        elif not key.startswith(("backbone.", "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor.")):
            if re.match(r"(sem_seg_head\.)?(motion|flow)", key):
                converted.drop("MPVSS flow module (no released layout to map)", key)
            else:
                converted.state[key] = tensor  # reported as unexpected by the loader
    if any("MPVSS" in reason for reason in converted.dropped):
        converted.notes.append("loaded the Mask2Former of an MPVSS checkpoint; its flow module is not converted")
    return converted
