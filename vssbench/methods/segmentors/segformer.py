"""SegFormer (Xie et al., NeurIPS 2021): a MiT encoder (4 stages at strides 4, 8, 16, 32) and a light head.

The encoder is Hugging Face's MiT (``SegformerForSemanticSegmentation``, built from a config);
features = the four stage outputs. Two heads, chosen by the preset:

* ``head="hf"``, the paper's all-MLP decoder as NVlabs wrote it (and as Hugging Face ported it):
  per level a linear projection to the decoder width, upsampled to 1/4, concatenated coarsest
  first, a 1x1 conv with batch norm and ReLU, the classifier. ``segformer-b0`` .. ``b5``, with
  the decoder width of the paper (256 for B0/B1, 768 for B2-B5).
* ``head="mmseg"``, mmsegmentation 1.x's ``SegformerHead``: per level a 1x1 conv *with batch norm
  and ReLU*, levels concatenated finest first, then the fusion conv (batch norm, ReLU). mmseg's
  weights cannot be expressed in the other head, so ``segformer-b0-mmseg`` .. ``b5-mmseg`` build
  this one, with mmseg's decoder width (256 for every size, as its configs set).

Layer-norm epsilons: NVlabs's MiT uses 1e-6 in the transformer blocks and the stage norms and
PyTorch's 1e-5 in the patch embeddings and the attention's sequence reduction; mmseg uses 1e-6
everywhere; Hugging Face 1e-5 everywhere. Loaded weights bring their source's values
(:meth:`SegFormer.set_layer_norm_eps`), so that a model computes what its source computes; the
``-mmseg`` presets start from mmseg's.

Weights (each function returns this module's tensors under portable names, see
:mod:`vssbench.methods.weights`): NVlabs/CFFM/MRCFA checkpoints (:func:`from_nvlabs`; extra
temporal heads dropped), mmseg 1.x checkpoints (:func:`from_mmseg`), and the ImageNet MiT of
either (:func:`backbone_from_nvlabs`, :func:`backbone_from_mmseg`) or of Hugging Face
(:func:`backbone_from_hf_classifier`). Hugging Face models load under their own names.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation

from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors.base import ImageSegmentor, cross_entropy

# Where each group of MiT layer norms sits, as in-memory module names of transformers 5.
_NORM_GROUPS = {
    "patch_embeddings": re.compile(r"stages\.\d+\.patch_embeddings\.layer_norm$"),
    "blocks": re.compile(r"stages\.\d+\.blocks\.\d+\.layernorm_(before|after)$"),
    "sequence_reduction": re.compile(r"stages\.\d+\.blocks\.\d+\.attention\.sequence_reduction\.layer_norm$"),
    "stages": re.compile(r"stages\.\d+\.layer_norm$"),
}
HF_LAYER_NORM_EPS = dict.fromkeys(_NORM_GROUPS, 1e-5)
NVLABS_LAYER_NORM_EPS = {"patch_embeddings": 1e-5, "blocks": 1e-6, "sequence_reduction": 1e-5, "stages": 1e-6}
MMSEG_LAYER_NORM_EPS = dict.fromkeys(_NORM_GROUPS, 1e-6)


class ConvModule(nn.Sequential):
    """mmcv's ConvModule as mmseg's heads use it: conv (no bias), batch norm, ReLU; mmseg's key names."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)


class MMSegSegformerHead(nn.Module):
    """mmsegmentation 1.x's SegformerHead (module docstring); logits at 1/4."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvModule(c, channels) for c in in_channels)
        self.fusion_conv = ConvModule(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        levels = [F.interpolate(conv(x), size=size, mode="bilinear", align_corners=False)
                  for conv, x in zip(self.convs, features)]
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(levels, dim=1))))


class SegFormer(ImageSegmentor):
    """SegFormer: a MiT encoder and the all-MLP decoder (``head="hf"``) or mmseg's head (``head="mmseg"``)."""

    head_modules = ("model.decode_head",)
    backbone_path = "model.segformer"

    def __init__(self, num_classes: int, head: str = "hf", layer_norm_eps: dict | None = None,
                 **config: object) -> None:
        super().__init__(num_classes)
        if head not in ("hf", "mmseg"):
            raise ValueError(f"unknown SegFormer head {head!r}; expected 'hf' or 'mmseg'")
        self.head = head
        self.config = SegformerConfig(num_labels=num_classes, **config)
        self.model = SegformerForSemanticSegmentation(self.config)
        if head == "mmseg":
            self.model.decode_head = MMSegSegformerHead(list(self.config.hidden_sizes),
                                                        self.config.decoder_hidden_size, num_classes,
                                                        self.config.classifier_dropout_prob)
        self.layer_norm_eps = dict(HF_LAYER_NORM_EPS)
        self.set_layer_norm_eps(layer_norm_eps or HF_LAYER_NORM_EPS)

    @property
    def classifier_prefixes(self) -> tuple[str, ...]:  # type: ignore[override]
        return ("model.decode_head.conv_seg.",) if self.head == "mmseg" else ("model.decode_head.classifier.",)

    def conventions(self) -> dict:
        """The numerical convention of the weights held (module docstring), saved with them."""
        return {"layer_norm_eps": dict(self.layer_norm_eps)}

    def set_conventions(self, conventions: dict) -> None:
        if "layer_norm_eps" in conventions:
            self.set_layer_norm_eps(conventions["layer_norm_eps"])

    def set_layer_norm_eps(self, eps: dict[str, float]) -> None:
        """Set the epsilon of each group of MiT layer norms (module docstring), e.g. a source's convention."""
        unknown = set(eps) - set(_NORM_GROUPS)
        if unknown:
            raise ValueError(f"unknown layer-norm groups {sorted(unknown)}; expected some of {sorted(_NORM_GROUPS)}")
        for name, module in self.model.segformer.named_modules():
            for group, pattern in _NORM_GROUPS.items():
                if group in eps and isinstance(module, nn.LayerNorm) and pattern.search(name):
                    module.eps = float(eps[group])
        self.layer_norm_eps.update({group: float(value) for group, value in eps.items()})

    def extract_stages(self, image: torch.Tensor, stages: int = 4) -> list[torch.Tensor]:
        """The first ``stages`` encoder stage outputs (TFC runs stages 1-2 alone)."""
        features, hidden = [], image
        for stage in self.model.segformer.stages[:stages]:
            hidden = stage(hidden)
            features.append(hidden)
        return features

    def extract(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.extract_stages(image)

    def decode(self, features: list[torch.Tensor], size: tuple[int, int],
               image_size: tuple[int, int] | None = None) -> torch.Tensor:
        logits = self.model.decode_head(features)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def fuse(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The all-MLP decoder's fused features at 1/4 (after its batch norm and ReLU, before dropout and
        the classifier), what CFFM refines across frames; ``model.decode_head.classifier`` maps them to
        the logits :meth:`decode` returns. The paper's head (``head="hf"``) only."""
        if self.head != "hf":
            raise ValueError("fuse() is the paper's all-MLP decoder; this SegFormer has mmseg's head")
        head, size = self.model.decode_head, features[0].shape[2:]
        levels = []
        for hidden, projection in zip(features, head.linear_projections):
            projected = projection(hidden).transpose(1, 2).reshape(hidden.shape[0], -1, *hidden.shape[2:])
            levels.append(F.interpolate(projected, size=size, mode="bilinear", align_corners=False))
        return head.activation(head.batch_norm(head.linear_fuse(torch.cat(levels[::-1], dim=1))))

    @property
    def feature_channels(self) -> list[int]:
        return list(self.config.hidden_sizes)

    def head_loss(self, features: list[torch.Tensor], label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"cross_entropy": cross_entropy(self.model.decode_head(features), label)}


_MIT_HEADS = dict(num_attention_heads=[1, 2, 5, 8])
_MIT = {  # MiT-B0..B5 as in the SegFormer paper
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], **_MIT_HEADS),
    "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], **_MIT_HEADS),
    "b2": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3], **_MIT_HEADS),
    "b3": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 18, 3], **_MIT_HEADS),
    "b4": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 8, 27, 3], **_MIT_HEADS),
    "b5": dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3], **_MIT_HEADS),
}
SEGFORMER_PRESETS = {
    # The paper's decoder width: 256 for B0/B1, 768 otherwise.
    **{f"segformer-{size}": dict(mit, decoder_hidden_size=256 if size in ("b0", "b1") else 768)
       for size, mit in _MIT.items()},
    # mmseg 1.x's SegformerHead, decoder width 256 at every size (configs/segformer/segformer_mit-b*).
    **{f"segformer-{size}-mmseg": dict(mit, decoder_hidden_size=256, head="mmseg", layer_norm_eps=MMSEG_LAYER_NORM_EPS)
       for size, mit in _MIT.items()},
    # The paper's head at 256 wide for every size: the per-frame branch of CFFM and MRCFA (their configs'
    # decoder_params embed_dim=256, GuoleiSun/VSS-CFFM local_configs/cffm/B*/).
    **{f"segformer-{size}-d256": dict(mit, decoder_hidden_size=256) for size, mit in _MIT.items()
       if size in ("b2", "b5")},
    "segformer-tiny": dict(
        hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4],
        decoder_hidden_size=64, classifier_dropout_prob=0.0, drop_path_rate=0.0,
    ),
}


# --------------------------------------------------------------------------- weights
# Portable names are the Hugging Face hub's: model.segformer.encoder.{patch_embeddings,block,layer_norm}...

_ENCODER = "model.segformer.encoder."


def _split(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """A fused projection (rows stacked as [q; k; v] or [k; v]) split into its parts."""
    return list(tensor.chunk(parts, dim=0))


def backbone_from_nvlabs(state: dict[str, torch.Tensor]) -> Converted:
    """NVlabs MixVisionTransformer keys (``patch_embed1``, ``block1.0.attn.kv``, ``norm1``) -> MiT encoder.

    Key and value are one linear layer in NVlabs's code (``kv``: key rows first, as its forward
    splits them) and two in Hugging Face's."""
    converted = Converted({}, conventions={"layer_norm_eps": NVLABS_LAYER_NORM_EPS})
    for key, tensor in state.items():
        if key.startswith("head."):
            converted.drop("ImageNet classifier", key)
            continue
        if match := re.match(r"block(\d)\.(\d+)\.attn\.kv\.(weight|bias)$", key):
            stage, block, kind = int(match.group(1)) - 1, match.group(2), match.group(3)
            key_part, value_part = _split(tensor, 2)
            prefix = f"{_ENCODER}block.{stage}.{block}.attention.self"
            converted.state[f"{prefix}.key.{kind}"] = key_part
            converted.state[f"{prefix}.value.{kind}"] = value_part
            continue
        name = key
        for pattern, replacement in (
            (r"^patch_embed(\d)\.proj\.", lambda m: f"patch_embeddings.{int(m.group(1)) - 1}.proj."),
            (r"^patch_embed(\d)\.norm\.", lambda m: f"patch_embeddings.{int(m.group(1)) - 1}.layer_norm."),
            (r"^block(\d)\.", lambda m: f"block.{int(m.group(1)) - 1}."),
            (r"^norm(\d)\.", lambda m: f"layer_norm.{int(m.group(1)) - 1}."),
            (r"\.norm1\.", ".layer_norm_1."), (r"\.norm2\.", ".layer_norm_2."),
            (r"\.attn\.q\.", ".attention.self.query."), (r"\.attn\.sr\.", ".attention.self.sr."),
            (r"\.attn\.norm\.", ".attention.self.layer_norm."), (r"\.attn\.proj\.", ".attention.output.dense."),
            (r"\.mlp\.fc1\.", ".mlp.dense1."), (r"\.mlp\.fc2\.", ".mlp.dense2."),
        ):
            name = re.sub(pattern, replacement, name)
        converted.state[_ENCODER + name] = tensor
    return converted


TEMPORAL_HEAD = "modules of a temporal head (CFFM/MRCFA) beyond the per-frame SegFormer branch"


def from_nvlabs(state: dict[str, torch.Tensor]) -> Converted:
    """An NVlabs SegFormer checkpoint (or CFFM's, MRCFA's: the same backbone and per-frame head) -> SegFormer
    with ``head="hf"``. Modules the temporal heads add are dropped with a note; the per-frame branch
    is exactly NVlabs's SegFormerHead, which CFFM also runs alone on single frames."""
    converted = backbone_from_nvlabs(strip_prefix(state, "backbone."))
    head_rules = [
        (r"^linear_c(\d)\.proj\.", lambda m: f"model.decode_head.linear_c.{int(m.group(1)) - 1}.proj."),
        (r"^linear_fuse\.conv\.", "model.decode_head.linear_fuse."),
        (r"^linear_fuse\.bn\.", "model.decode_head.batch_norm."),
        (r"^linear_pred\.", "model.decode_head.classifier."),
    ]
    head = rename(strip_prefix(state, "decode_head."), head_rules, drop={
        r"^conv_seg\.": "mmseg 0.x BaseDecodeHead's conv_seg, which SegFormerHead never calls",
        r"^(?!linear_c\d\.|linear_fuse\.|linear_pred\.)": TEMPORAL_HEAD,
    })
    converted.state.update(head.state)
    for reason, keys in head.dropped.items():
        converted.dropped.setdefault(reason, []).extend(f"decode_head.{k}" for k in keys)
    if any("temporal head" in reason for reason in head.dropped):
        converted.notes.append("loaded the per-frame SegFormer branch of a video head (CFFM/MRCFA); its temporal "
                               "modules are not part of this architecture")
    converted.state.update({k: v for k, v in state.items() if not k.startswith(("backbone.", "decode_head."))})
    return converted


def backbone_from_mmseg(state: dict[str, torch.Tensor]) -> Converted:
    """mmseg 1.x MixVisionTransformer keys (``layers.i.0`` patch embedding, ``layers.i.1.j`` blocks with
    ``attn.attn.in_proj_*`` = [q; k; v] and 1x1-conv FFN layers, ``layers.i.2`` norm) -> MiT encoder."""
    converted = Converted({}, conventions={"layer_norm_eps": MMSEG_LAYER_NORM_EPS})
    for key, tensor in state.items():
        if key.startswith(("head.", "fc.")):
            converted.drop("ImageNet classifier", key)
            continue
        if match := re.match(r"layers\.(\d)\.1\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$", key):
            prefix = f"{_ENCODER}block.{match.group(1)}.{match.group(2)}.attention.self"
            for part, value in zip(("query", "key", "value"), _split(tensor, 3)):
                converted.state[f"{prefix}.{part}.{match.group(3)}"] = value
            continue
        if re.match(r"layers\.\d\.1\.\d+\.ffn\.layers\.[04]\.weight$", key):
            tensor = tensor.flatten(1)  # a 1x1 conv's (out, in, 1, 1) kernel is a linear layer's (out, in) weight
        name = key
        for pattern, replacement in (
            (r"^layers\.(\d)\.0\.projection\.", r"patch_embeddings.\1.proj."),
            (r"^layers\.(\d)\.0\.norm\.", r"patch_embeddings.\1.layer_norm."),
            (r"^layers\.(\d)\.1\.(\d+)\.", r"block.\1.\2."),
            (r"^layers\.(\d)\.2\.", r"layer_norm.\1."),
            (r"\.norm1\.", ".layer_norm_1."), (r"\.norm2\.", ".layer_norm_2."),
            (r"\.attn\.attn\.out_proj\.", ".attention.output.dense."),
            (r"\.attn\.sr\.", ".attention.self.sr."), (r"\.attn\.norm\.", ".attention.self.layer_norm."),
            (r"\.ffn\.layers\.0\.", ".mlp.dense1."), (r"\.ffn\.layers\.1\.", ".mlp.dwconv.dwconv."),
            (r"\.ffn\.layers\.4\.", ".mlp.dense2."),
        ):
            name = re.sub(pattern, replacement, name)
        converted.state[_ENCODER + name] = tensor
    return converted


def from_mmseg(state: dict[str, torch.Tensor]) -> Converted:
    """An mmsegmentation 1.x SegFormer (``backbone.layers``, ``decode_head.convs/fusion_conv/conv_seg``)
    -> SegFormer with ``head="mmseg"``, whose module names are mmseg's."""
    converted = backbone_from_mmseg(strip_prefix(state, "backbone."))
    auxiliary = [key for key in state if key.startswith("auxiliary_head.")]
    if auxiliary:
        converted.dropped["auxiliary head (training only)"] = auxiliary
    converted.state.update({f"model.{k}": v for k, v in state.items() if k.startswith("decode_head.")})
    converted.state.update({k: v for k, v in state.items()
                            if not k.startswith(("backbone.", "decode_head.", "auxiliary_head."))})
    return converted


def backbone_from_hf_classifier(state: dict[str, torch.Tensor]) -> Converted:
    """A Hugging Face MiT classifier (``nvidia/mit-b0``: ``segformer.encoder.*`` and ``classifier.*``,
    hub names) -> MiT encoder."""
    return rename({k: v for k, v in state.items()}, [(r"^segformer\.", "model.segformer.")],
                  drop={r"^classifier\.": "ImageNet classifier"})
