"""MPVSS: mask propagation with query-based flow (Weng et al., NeurIPS 2023).

Key frame: Mask2Former runs in full; its N class logits, N mask logits and N output query
embeddings are kept. Non-key frame j: a flow module estimates, for every key-frame mask,
a flow field from frame j back to the key frame, the key masks are warped with their own
flows, and the semantic map is formed from the warped masks and the key frame's class
probabilities. Flow is always computed from the key frame to the current frame, never
chained.

Flow module (hyperparameters from the official ``ziplab/MPVSS`` config):

* motion encoder: FlowNetS's encoder on the (current, key) pair resized by 0.5, giving
  maps at 1/4 .. 1/64 of that input (conv2 .. conv6);
* motion decoder: N flow queries, initialised from the key frame's query embeddings, and
  the three coarsest maps (conv6, conv5, conv4) projected to the hidden width with a sine
  position and a level embedding; 9 layers (3 rounds over the 3 levels, coarse to fine)
  of joint self-attention over [queries; one level] followed by an FFN, each layer
  updating the queries and that level's map;
* flow head: the queries become N flow embeddings (LayerNorm, MLP with 2 hidden layers),
  the finest map (conv2) is projected to 2C channels (MLP); their dot products give each
  query's x and y flow. A FlowNetS-style coarse-to-fine decoder over [conv2, conv3, the 3
  refined maps] gives a pixel-wise flow; a 3x3 conv over [pixel flow; query flow]
  (initialised weight 0, bias 1 as in the official code) fuses them into each mask's flow.

Variants (paper Table 3b; parameter counts of the flow module for R50, tested): ``copy`` (no
flow), ``optical-flow`` (one FlowNetS flow for all masks; 38.68M), ``query-random`` (query flow
only, flow queries initialised from random learnable embeddings; 37.58M, the paper prints 37.56M:
the 100x256 embedding is the 0.026M between them), ``query-learned`` (query flow only, flow queries
initialised from the key frame's learned queries Q_O^k; 37.56M), ``query-for-pf`` (the whole
module, but only the pixel-wise flow F^PF, which the flow queries have refined, warps the masks;
40.08M) and ``query-based-flow`` (default: each query flow refined with the pixel-wise flow by the
fuse conv; 40.08M). The two query-only rows are 40.08 - 37.56 = 2.52M smaller because they have no
pixel-wise branch (the coarse-to-fine decoder, its flow conv and the fuse conv).

Training: Mask2Former's set loss on the warped masks of every decoder layer, its terms weighted
by the recipe's ``loss_weights`` (the official VSPW config ``MPVSS-VSPW.yaml``: class 2, mask 5,
dice 5; it overrides ``config.py``'s defaults 1, 20, 1; the Hungarian matcher's costs are the
segmentor config's, the same 2, 5, 5), for (key, current) pairs up to 10 frames apart. The method
freezes the segmentor except its class head and mask embedding (the frozen parts, batch norms
included, stay in evaluation mode); a recipe's ``trainable`` rules may change that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.mask2former.modeling_mask2former import Mask2FormerSinePositionEmbedding

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.flownet import (
    FLOWNETS_FULL,
    FLOWNETS_TINY,
    CoarseToFineFlowDecoder,
    FlowNetS,
    FlowNetSEncoder,
    prepare_pair,
)
from vssbench.methods.segmentors import Mask2Former, Mask2FormerOutput, build_segmentor, semantic_from_masks
from vssbench.methods.segmentors.base import pad_to_multiple
from vssbench.methods.warp import flow_warp

@dataclass(frozen=True)
class Variant:
    """One row of MPVSS Table 3: what moves a key frame's masks to a non-key frame."""

    flow: Literal["query", "optical", "none"]  # the query-based flow module, FlowNetS flow, or nothing (copy)
    # Table 3b's flow designs (flow "query"): where the flow queries start, and which flow warps the masks.
    query_source: Literal["learned", "key-frame"] | None = None
    output: Literal["query", "pixel", "fused"] | None = None


VARIANTS = {
    "query-based-flow": Variant("query", "key-frame", "fused"),
    "copy": Variant("none"),
    "optical-flow": Variant("optical"),
    "query-random": Variant("query", "learned", "query"),
    "query-learned": Variant("query", "key-frame", "query"),
    "query-for-pf": Variant("query", "key-frame", "pixel"),
}
FINETUNED_SEGMENTOR_PARTS = ("class_predictor", "mask_embedder")


class MLP(nn.Module):
    """Linear layers with ReLU between them (Mask2Former's MLP)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x) if index == len(self.layers) - 1 else F.relu(layer(x))
        return x


class JointSelfAttention(nn.Module):
    """Post-norm multi-head self-attention over a token sequence (B, T, C), via SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, length, dim = tokens.shape
        q, k, v = self.qkv(tokens).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, dim)
        return self.norm(tokens + self.out(attended))


class FeedForward(nn.Module):
    """Post-norm FFN: Linear, ReLU, Linear, residual, LayerNorm."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2, self.norm = nn.Linear(dim, hidden), nn.Linear(hidden, dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.fc2(F.relu(self.fc1(x))))


class QueryFlowModule(nn.Module):
    """Motion encoder + motion decoder + flow head: one flow field per key-frame mask.

    ``query_source``: ``key-frame`` (the flow queries start from the key frame's query embeddings)
    or ``learned`` (from a learnable embedding, randomly initialised). ``output``: ``fused`` (each
    query flow refined with the pixel-wise flow), ``pixel`` (the pixel-wise flow only) or ``query``
    (the query flow only; the module then has no pixel-wise branch at all).
    """

    def __init__(self, num_queries: int, hidden: int, heads: int, ffn: int, rounds: int,
                 encoder_widths: tuple[int, ...], pixel_deconv: tuple[int, ...], query_source: str = "key-frame",
                 output: str = "fused", image_scale: float = 0.5) -> None:
        super().__init__()
        self.image_scale = image_scale
        self.query_source = query_source
        self.output = output
        self.encoder = FlowNetSEncoder(encoder_widths)
        c2, c3, c4, c5, c6 = self.encoder.out_channels
        levels = (c6, c5, c4)  # attended coarse to fine
        self.input_proj = nn.ModuleList(nn.Conv2d(c, hidden, 1) for c in levels)
        self.level_embed = nn.Embedding(len(levels), hidden)
        self.position = Mask2FormerSinePositionEmbedding(num_position_features=hidden // 2, normalize=True)
        self.query_pos = nn.Embedding(num_queries, hidden)
        if query_source == "learned":
            self.learned_queries = nn.Embedding(num_queries, hidden)
        self.attention = nn.ModuleList(JointSelfAttention(hidden, heads) for _ in range(rounds * len(levels)))
        self.ffn = nn.ModuleList(FeedForward(hidden, ffn) for _ in range(rounds * len(levels)))
        self.query_norm = nn.LayerNorm(hidden)
        self.flow_embed = MLP(hidden, 2 * hidden, hidden, 3)
        self.motion_proj = MLP(c2, 2 * hidden, 2 * hidden, 3)
        if output != "query":
            self.pixel_decoder = CoarseToFineFlowDecoder((c2, c3, hidden, hidden, hidden), pixel_deconv)
            self.predict_flow = nn.Conv2d(self.pixel_decoder.out_channels, 2, 3, 1, 1, bias=False)
        if output == "fused":
            self.fuse = nn.Conv2d(4, 2, 3, 1, 1)
            nn.init.zeros_(self.fuse.weight)
            nn.init.ones_(self.fuse.bias)
        self.hidden = hidden

    def initial_queries(self, key_queries: torch.Tensor) -> torch.Tensor:
        if self.query_source == "learned":
            return self.learned_queries.weight.expand(key_queries.shape[0], -1, -1)
        return key_queries

    def forward(self, current: torch.Tensor, key: torch.Tensor, key_queries: torch.Tensor) -> torch.Tensor:
        """(B, N, 2, h, w) flow of each mask from the current frame to the key frame (h, w = 1/8 frame)."""
        conv2, conv3, *coarse = self.encoder(prepare_pair(current, key, self.image_scale))
        levels = coarse[::-1]  # conv6, conv5, conv4
        sizes = [level.shape[-2:] for level in levels]
        tokens = [
            (proj(level) + embed[:, None, None]).flatten(2).transpose(1, 2)
            for proj, level, embed in zip(self.input_proj, levels, self.level_embed.weight)
        ]
        positions = [self.position(level.shape, level.device, level.dtype).flatten(2).transpose(1, 2)
                     for level in levels]
        queries = self.initial_queries(key_queries)
        count = queries.shape[1]
        # Motion decoder: layer i attends jointly over [queries; level i mod 3] and updates both.
        for index, (attention, ffn) in enumerate(zip(self.attention, self.ffn)):
            level = index % len(levels)
            joint = torch.cat([queries + self.query_pos.weight, tokens[level] + positions[level]], dim=1)
            joint = ffn(attention(joint))
            queries, tokens[level] = joint[:, :count], joint[:, count:]
        batch, _, height, width = conv2.shape
        if self.output != "query":
            refined = [t.transpose(1, 2).reshape(batch, self.hidden, *size) for t, size in zip(tokens, sizes)]
            # Pixel-wise flow F^PF, coarse to fine over [conv2, conv3, refined conv4, conv5, conv6].
            pixel_flow = self.predict_flow(self.pixel_decoder([conv2, conv3, *refined[::-1]]))
            pixel_flow = pixel_flow[:, None].expand(batch, count, 2, height, width)
            if self.output == "pixel":
                return pixel_flow
        # Query flow: flow embeddings dotted with the projected finest motion map (x and y halves).
        embeddings = self.flow_embed(self.query_norm(queries))
        motion = self.motion_proj(conv2.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        flow_x = torch.einsum("bqc,bchw->bqhw", embeddings, motion[:, self.hidden:])
        flow_y = torch.einsum("bqc,bchw->bqhw", embeddings, motion[:, : self.hidden])
        query_flow = torch.stack([flow_x, flow_y], dim=2)
        if self.output == "query":
            return query_flow
        fused = self.fuse(torch.cat([pixel_flow.flatten(0, 1), query_flow.flatten(0, 1)], dim=1))
        return fused.view(batch, count, 2, height, width)


def warp_masks(mask_logits: torch.Tensor, flows: torch.Tensor) -> torch.Tensor:
    """Warp each of the N mask logit maps (B, N, h, w) with its own flow (B, N, 2, h', w')."""
    batch, count, height, width = mask_logits.shape
    warped = flow_warp(mask_logits.reshape(batch * count, 1, height, width), flows.flatten(0, 1))
    return warped.view(batch, count, height, width)


_MOTION_PAPER = dict(hidden=256, heads=8, ffn=2048, rounds=3, encoder_widths=(64, 128, 256, 512, 512, 1024),
                     pixel_deconv=(64, 128, 128, 128))
_MOTION_TINY = dict(hidden=32, heads=2, ffn=64, rounds=3, encoder_widths=(16, 32, 32, 64, 64, 64),
                    pixel_deconv=(16, 32, 32, 32))


@register_method("mpvss")
class MPVSS(VideoMethod):
    """Mask propagation: Mask2Former on key frames, per-mask query-based flow on the others."""

    presets = {
        "r50": dict(segmentor="mask2former-r50", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "r101": dict(segmentor="mask2former-r101", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "swin-t": dict(segmentor="mask2former-swin-t", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "swin-s": dict(segmentor="mask2former-swin-s", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "swin-b": dict(segmentor="mask2former-swin-b", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "swin-l": dict(segmentor="mask2former-swin-l", motion=_MOTION_PAPER, flownet=FLOWNETS_FULL),
        "tiny": dict(segmentor="mask2former-tiny", motion=_MOTION_TINY, flownet=FLOWNETS_TINY),
    }
    default_preset = "tiny"
    variants = tuple(VARIANTS)

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, motion: dict,
                 flownet: dict) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: Mask2Former = build_segmentor(segmentor, num_classes)  # type: ignore[assignment]
        num_queries = self.segmentor.config.num_queries
        self.settings = VARIANTS[variant]
        if self.settings.flow == "optical":
            self.flownet = FlowNetS(**flownet)
        elif self.settings.flow == "query":
            self.flow_module = QueryFlowModule(num_queries=num_queries, query_source=self.settings.query_source,
                                               output=self.settings.output, **motion)
        for name, parameter in self.segmentor.named_parameters():
            parameter.requires_grad = any(part in name for part in FINETUNED_SEGMENTOR_PARTS)
        self._key: tuple[torch.Tensor, Mask2FormerOutput] | None = None

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    def weight_components(self) -> dict[str, str]:
        """The FlowNetS of ``optical-flow``, else the motion encoder (FlowNetS's encoder, which MPVSS
        initialises from FlyingChairs)."""
        flow = {"optical": "flownet", "none": None, "query": "flow_module.encoder"}[self.settings.flow]
        return {"segmentor": "segmentor", **({"flow": flow} if flow else {})}

    def reset(self) -> None:
        self._key = None

    def mask_flows(self, current: torch.Tensor, key: torch.Tensor, key_output: Mask2FormerOutput) -> torch.Tensor:
        """(B, N, 2, h, w) flow of every key mask to the current frame, as the variant defines it."""
        # The frames padded as Mask2Former pads its input (official code: the padded images feed both).
        current = pad_to_multiple(current, self.segmentor.size_divisibility)
        key = pad_to_multiple(key, self.segmentor.size_divisibility)
        if self.settings.flow == "optical":
            flow = self.flownet(current, key)
            return flow[:, None].expand(-1, key_output.mask_logits.shape[1], -1, -1, -1)
        return self.flow_module(current, key, key_output.query_embeddings)

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        size = frame.shape[-2:]
        if is_key or self._key is None:
            output = self.segmentor.decode_queries(self.segmentor.extract(frame), size)
            self._key = (frame, output)
            return output.semantic
        key_frame, key_output = self._key
        if self.settings.flow == "none":
            return key_output.semantic
        warped = warp_masks(key_output.mask_logits, self.mask_flows(frame, key_frame, key_output))
        # The class probabilities are the key frame's; only the masks move.
        return semantic_from_masks(key_output.class_logits, warped, size)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key, current = batch["frames"][:, 0], batch["frames"][:, 1]
        output = self.segmentor.decode_queries(self.segmentor.extract(key), key.shape[-2:])
        if self.settings.flow == "none":
            warped_layers = output.mask_logits_per_layer
        else:
            flows = self.mask_flows(current, key, output)
            warped_layers = tuple(warp_masks(masks, flows) for masks in output.mask_logits_per_layer)
        return self.segmentor.set_loss(output.class_logits_per_layer, warped_layers, batch["labels"][:, 1])

    def loss_terms(self) -> tuple[str, ...]:
        return self.segmentor.loss_terms
