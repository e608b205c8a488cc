"""CFFM (Sun, Liu, Wang, Gool, Zhou: "Coarse-to-Fine Feature Mining for Video Semantic Segmentation",
CVPR 2022; code and VSPW weights: GuoleiSun/VSS-CFFM), as its ``CFFMHead_clips_resize1_8`` runs.

Every frame goes through a SegFormer (MiT encoder, all-MLP decoder 256 wide at every size): the fused
decoder features F_t at 1/4 give the per-frame prediction. CFFM then refines the target frame t with a
clip of reference frames: F is resized to 1/8, and a focal cross-frame transformer (the paper's
Coarse-to-Fine Feature Assembling and Cross-frame Feature Mining, Sec. 3.2-3.3) lets each 7x7 window
of the target attend to

* its own 49 tokens and a 3-token ring around the window (expand size 3, the finest level);
* the target pooled per window (one token per 7x7 window), over the 5x5 windows around it;
* each reference frame pooled more coarsely the nearer it is: t-9 per 7x7 window (7x7 neighbourhood
  of pooled tokens), t-6 per 3x3 sub-window (5x5, stride 2), t-3 per 2x2 (3x3, stride 3), after a
  bilinear resize that makes the pooled grid a multiple of the window grid.

Each block normalises the whole clip, attends from the target only, and leaves the reference frames'
features unchanged. The refined target features are concatenated with F_t and classified
(``linear_pred2``); the output is that prediction at 1/4, which the runner upsamples to the label.

Test-time protocol and per-frame cache: :mod:`vssbench.methods.clips` (the clip (t-9, t-6, t-3, t), the
official clips of frames 3-8, the per-frame prediction for frames 0-2; each frame's features computed
once, so the cost report counts one SegFormer pass per frame).

Training (``loss``): 0.5 x cross-entropy of the per-frame predictions of every clip frame, plus the
cross-entropy of the refined target (``BaseDecodeHead_clips_flow.losses``); the recipe weights the
two terms ``frames`` and ``target``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import register_method
from vssbench.methods.clips import ClipMethod, Protocol, segformer_branch
from vssbench.methods.keymap import Converted, rename, strip_prefix
from vssbench.methods.segmentors import cross_entropy

# --------------------------------------------------------------------------- index tables


def relative_position_index(query: tuple[int, int], key: tuple[int, int]) -> torch.Tensor:
    """Index into a (qh + kh - 1) x (qw + kw - 1) bias table of every (query, key) offset of two grids
    (Swin's relative position bias, generalised to a key grid of another size)."""
    q = torch.stack(torch.meshgrid(torch.arange(query[0]), torch.arange(query[1]), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(key[0]), torch.arange(key[1]), indexing="ij")).flatten(1)
    offsets = (q[:, :, None] - k[:, None, :]).permute(1, 2, 0)
    return (offsets[..., 0] + key[0] - 1) * (query[1] + key[1] - 1) + offsets[..., 1] + key[1] - 1


def window_partition(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/size * W/size, size, size, C), windows in row-major order per image."""
    b, h, w, c = x.shape
    x = x.view(b, h // size, size, w // size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, size, size, c)


def window_merge(windows: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    x = windows.view(-1, height // size, width // size, size, size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def pool_windows(x: torch.Tensor, size: int, pool: nn.Linear) -> torch.Tensor:
    """(B, H, W, C) -> (B, H/size, W/size, C): each size x size window pooled by a learnt linear map
    over its positions (``pool_method="fc"``, initialised to the mean)."""
    b, h, w, c = x.shape
    windows = x.view(b, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(b, h // size, w // size, size * size, c).transpose(3, 4)
    return pool(windows).flatten(-2)


def unfold_neighbourhoods(x: torch.Tensor, unfold: nn.Unfold, heads: int) -> torch.Tensor:
    """(B, C, h, w) pooled keys or values -> (B * L, heads, K*K, C/heads): the K x K neighbourhood of
    pooled tokens each of the L target windows attends to."""
    b, c = x.shape[:2]
    size = unfold.kernel_size[0]
    columns = unfold(x).view(b, c, size, size, -1).permute(0, 4, 2, 3, 1)
    return columns.reshape(-1, size * size, heads, c // heads).transpose(1, 2)


def padding_bias(unfold: nn.Unfold, grid: tuple[int, int], stride: int, like: torch.Tensor) -> torch.Tensor:
    """(1, L, K*K): -100 on neighbourhood positions that fall in the unfold's zero padding, else 0."""
    ones = like.new_ones(1, 1, *grid)
    size = unfold.kernel_size[0]
    valid = unfold(ones).view(1, 1, size, size, -1).permute(0, 4, 2, 3, 1)
    valid = valid.reshape(grid[0] * grid[1] // stride // stride, -1, 1).flatten(1).unsqueeze(0)
    return valid.masked_fill(valid == 0, -100.0).masked_fill(valid > 0, 0.0)


# --------------------------------------------------------------------------- the focal cross-frame transformer


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class FocalClipAttention(nn.Module):
    """Attention of the target's windows to the levels listed in the module docstring
    (``WindowAttention3d3`` with focal level 2 and pooling "fc", as every CFFM config sets them)."""

    def __init__(self, dim: int, heads: int, window: int, expand: int, focal_window: int,
                 clip_strides: tuple[int, ...], clip_kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.heads, self.window, self.expand = heads, window, expand
        self.scale = (dim // heads) ** -0.5
        area = window * window
        # Level 0: the window itself (Swin's bias table) and its ring of `expand` tokens (a free bias).
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index((window, window), (window, window)),
                             persistent=False)
        ring = 4 * area - 4 * (window - expand) ** 2
        self.relative_position_bias_table_to_neighbors = nn.Parameter(torch.zeros(1, heads, area, ring))
        nn.init.trunc_normal_(self.relative_position_bias_table_to_neighbors, std=0.02)
        rolled = torch.ones(4, window, window)  # per roll direction: the positions outside the window
        rolled[0, :-expand, :-expand] = rolled[1, :-expand, expand:] = 0
        rolled[2, expand:, :-expand] = rolled[3, expand:, expand:] = 0
        self.register_buffer("valid_ind_rolled", rolled.flatten().nonzero().view(-1), persistent=False)
        # Level 1: the target pooled per window, its focal_window x focal_window neighbourhood.
        self.unfolds = nn.ModuleList([nn.Unfold((focal_window, focal_window), stride=1, padding=focal_window // 2)])
        self.relative_position_bias_table_to_windows = nn.ParameterList(
            [nn.Parameter(nn.init.trunc_normal_(torch.zeros(heads, (window + focal_window - 1) ** 2), std=0.02))])
        self.register_buffer("relative_position_index_0",
                             relative_position_index((window, window), (focal_window, focal_window)), persistent=False)
        # The reference frames, each pooled at its stride, a kernel x kernel neighbourhood.
        self.clip_strides = clip_strides
        self.unfolds_clips = nn.ModuleList(
            [nn.Unfold((kernel, kernel), stride=stride, padding=kernel // 2)
             for stride, kernel in zip(clip_strides, clip_kernels)])
        self.relative_position_bias_table_to_windows_clips = nn.ParameterList(
            [nn.Parameter(nn.init.trunc_normal_(torch.zeros(heads, (window + kernel - 1) ** 2), std=0.02))
             for kernel in clip_kernels])
        for k, kernel in enumerate(clip_kernels):
            self.register_buffer(f"relative_position_index_clips_{k}",
                                 relative_position_index((window, window), (kernel, kernel)), persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _split_heads(self, windows: torch.Tensor) -> torch.Tensor:
        """(N, window, window, C) -> (N, heads, window*window, C/heads)."""
        n, c = windows.shape[0], windows.shape[-1]
        return windows.view(n, -1, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, target: torch.Tensor, pooled_target: torch.Tensor,
                pooled_references: list[torch.Tensor]) -> torch.Tensor:
        """target (B, H, W, C) with H, W multiples of the window; pooled maps (B, h_k, w_k, C).
        Returns (B * windows, window*window, C)."""
        b, _, _, c = target.shape
        window, heads = self.window, self.heads
        q, k, v = self.qkv(target).reshape(b, *target.shape[1:3], 3, c).permute(3, 0, 1, 2, 4)
        q_windows, k_windows, v_windows = (self._split_heads(window_partition(t, window)) for t in (q, k, v))
        # The ring: keys and values rolled by (+-expand, +-expand), the window's own positions left out.
        shifts = ((-self.expand, -self.expand), (-self.expand, self.expand), (self.expand, -self.expand),
                  (self.expand, self.expand))
        k_ring = torch.cat([self._split_heads(window_partition(torch.roll(k, s, dims=(1, 2)), window)) for s in shifts],
                           2)[:, :, self.valid_ind_rolled]
        v_ring = torch.cat([self._split_heads(window_partition(torch.roll(v, s, dims=(1, 2)), window)) for s in shifts],
                           2)[:, :, self.valid_ind_rolled]
        keys, values, biases = [k_windows, k_ring], [v_windows, v_ring], []
        # Coarser levels: pooled maps, projected, and each window's neighbourhood in them.
        levels = [(pooled_target, self.unfolds[0], 1, self.relative_position_bias_table_to_windows[0],
                   self.relative_position_index_0)]
        levels += [(pooled, unfold, stride, table, getattr(self, f"relative_position_index_clips_{i}"))
                   for i, (pooled, unfold, stride, table) in enumerate(zip(
                       pooled_references, self.unfolds_clips, self.clip_strides,
                       self.relative_position_bias_table_to_windows_clips))]
        for pooled, unfold, stride, table, index in levels:
            grid = pooled.shape[1:3]
            _, k_pooled, v_pooled = self.qkv(pooled).reshape(b, *grid, 3, c).permute(3, 0, 4, 1, 2)
            keys.append(unfold_neighbourhoods(k_pooled, unfold, heads))
            values.append(unfold_neighbourhoods(v_pooled, unfold, heads))
            size = unfold.kernel_size[0] ** 2
            mask = padding_bias(unfold, grid, stride, pooled)  # (1, L, K*K), one row per target window
            position = table[:, index.view(-1)].view(heads, window * window, size)
            biases.append((position, mask.expand(b, -1, -1).reshape(-1, 1, 1, size)))

        attn = (q_windows * self.scale) @ torch.cat(keys, 2).transpose(-2, -1)
        area, ring_end = window * window, window * window + k_ring.shape[2]
        inside = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(area, area, -1)
        attn[:, :, :, :area] = attn[:, :, :, :area] + inside.permute(2, 0, 1).unsqueeze(0)
        attn[:, :, :, area:ring_end] = attn[:, :, :, area:ring_end] + self.relative_position_bias_table_to_neighbors
        offset = ring_end
        for position, mask in biases:
            size = position.shape[-1]
            attn[:, :, :, offset:offset + size] = attn[:, :, :, offset:offset + size] + position.unsqueeze(0)
            attn[:, :, :, offset:offset + size] = attn[:, :, :, offset:offset + size] + mask
            offset += size
        attn = attn.softmax(-1)
        out = (attn @ torch.cat(values, 2)).transpose(1, 2).reshape(attn.shape[0], area, c)
        return self.proj(out)


class FocalClipBlock(nn.Module):
    """One block of the cross-frame transformer (``CffmTransformerBlock3d3``, no window shift)."""

    def __init__(self, dim: int, heads: int, window: int = 7, expand: int = 3, focal_window: int = 5,
                 clip_strides: tuple[int, ...] = (1, 2, 3), clip_kernels: tuple[int, ...] = (7, 5, 3),
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.window, self.clip_strides = window, clip_strides
        self.pool_layers = nn.ModuleList([self._mean_pool(window)])
        self.pool_layers_clips = nn.ModuleList([self._mean_pool(window // stride) for stride in clip_strides])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FocalClipAttention(dim, heads, window, expand, focal_window, clip_strides, clip_kernels)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    @staticmethod
    def _mean_pool(size: int) -> nn.Linear:
        pool = nn.Linear(size * size, 1)
        nn.init.constant_(pool.weight, 1.0 / (size * size))
        nn.init.zeros_(pool.bias)
        return pool

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, T, H, W, C), the target last -> the same clip with the target refined."""
        b, t, h0, w0, c = clip.shape
        x = self.norm1(clip).reshape(b * t, h0, w0, c)
        x = F.pad(x, (0, 0, 0, -w0 % self.window, 0, -h0 % self.window))  # to multiples of the window
        h, w = x.shape[1:3]
        x = x.view(b, t, h, w, c)
        rows, columns = math.ceil(h / self.window), math.ceil(w / self.window)
        pooled_target = pool_windows(x[:, -1], self.window, self.pool_layers[0])
        pooled_references = []
        for k, (stride, pool) in enumerate(zip(self.clip_strides, self.pool_layers_clips)):
            size = self.window // stride  # each window split into stride x stride sub-windows of this size
            height, width = rows * stride * size, columns * stride * size
            reference = x[:, k]
            if (height, width) != (h, w):
                reference = F.interpolate(reference.permute(0, 3, 1, 2), size=(height, width), mode="bilinear",
                                          align_corners=False).permute(0, 2, 3, 1)
            pooled_references.append(pool_windows(reference.contiguous(), size, pool))
        windows = self.attn(x[:, -1], pooled_target, pooled_references)
        refined = window_merge(windows.view(-1, self.window, self.window, c), self.window, h, w)[:, :h0, :w0]
        target = clip[:, -1] + refined
        target = target + self.mlp(self.norm2(target))
        return torch.cat([clip[:, :-1], target.unsqueeze(1)], 1)


class FocalClipTransformer(nn.Module):
    """``BasicLayer3d3``: ``depth`` blocks over a (B, T, C, H, W) clip of 1/8 features."""

    def __init__(self, dim: int, depth: int, heads: int = 8) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([FocalClipBlock(dim, heads) for _ in range(depth)])

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        x = clip.permute(0, 1, 3, 4, 2)
        for block in self.blocks:
            x = block(x)
        return x.permute(0, 1, 4, 2, 3)


# --------------------------------------------------------------------------- the method


@register_method("cffm")
class CFFM(ClipMethod):
    """A SegFormer on every frame and the focal cross-frame transformer on the clip its protocol names."""

    presets = {
        # MiT size and transformer depth of the official configs (local_configs/cffm/B*/...vspw2.160k.py).
        "b0": dict(segmentor="segformer-b0", depth=1),
        "b1": dict(segmentor="segformer-b1", depth=2),
        "b2": dict(segmentor="segformer-b2-d256", depth=2),
        "b5": dict(segmentor="segformer-b5-d256", depth=4),
        "tiny": dict(segmentor="segformer-tiny", depth=1),
    }
    default_preset = "tiny"
    protocols = {"default": Protocol(size_divisor=1, pixels=False, recompute=False),  # windows pad any size
                 "official": Protocol(size_divisor=32, pixels=True, recompute=True)}

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, depth: int) -> None:
        super().__init__(preset, variant, num_classes, segmentor)
        width = self.segmentor.config.decoder_hidden_size
        self.decoder_focal = FocalClipTransformer(width, depth)
        self.linear_pred2 = nn.Conv2d(2 * width, num_classes, kernel_size=1)
        self.dropout = nn.Dropout(self.segmentor.config.classifier_dropout_prob)

    def per_frame(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, 3, H, W) -> the per-frame ``logits`` at 1/4 and the fused features resized to 1/8, ``half``
        (the official ``int(h/2) x int(w/2)`` of the 1/4 map)."""
        fused = self.segmentor.fuse(self.segmentor.extract(frames))
        logits = self.segmentor.model.decode_head.classifier(self.segmentor.model.decode_head.dropout(fused))
        h, w = fused.shape[2:]
        half = F.interpolate(fused, size=(int(h / 2), int(w / 2)), mode="bilinear", align_corners=False)
        return {"logits": logits, "half": half}

    def refine(self, clip: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(B, T, C, h, w) features at 1/8, the target last -> the target's refined logits at ``size`` (1/4)."""
        refined = self.decoder_focal(clip)
        logits = self.linear_pred2(self.dropout(torch.cat([clip[:, -1], refined[:, -1]], 1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def predict_clip(self, clip: list[dict]) -> torch.Tensor:
        return self.refine(torch.stack([frame["half"] for frame in clip], 1), tuple(clip[-1]["logits"].shape[2:]))

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A batch of clips (B, T, ...), the target last: every frame's per-frame prediction and the
        target's refined one, each against its labels at their resolution."""
        frames, labels = batch["frames"], batch["labels"]
        b, t = frames.shape[:2]
        flat = self.per_frame(frames.flatten(0, 1))
        logits, half = flat["logits"], flat["half"]
        refined = self.refine(half.view(b, t, *half.shape[1:]), tuple(logits.shape[2:]))
        return {"frames": cross_entropy(logits, labels.flatten(0, 1)), "target": cross_entropy(refined, labels[:, -1])}

    def loss_terms(self) -> tuple[str, ...]:
        return ("frames", "target")


def from_official(state: dict[str, torch.Tensor]) -> Converted:
    """A CFFM checkpoint (mmseg 0.x ``EncoderDecoder_clips``: NVlabs backbone names, ``decode_head.linear_c*``,
    ``decode_head.decoder_focal.*``, ``decode_head.linear_pred2``) -> this method's portable names. The index
    buffers the official modules save are rebuilt here from the configuration, so they are dropped."""
    converted = segformer_branch(state, ("decode_head.decoder_focal.", "decode_head.linear_pred2."))
    head = rename(strip_prefix(state, "decode_head."), [(r"^decoder_focal\.", "decoder_focal."),
                                                         (r"^linear_pred2\.", "linear_pred2.")], drop={
        r"(relative_position_index(_\d+|_clips_\d+)?|valid_ind_rolled|attn_mask)$": "index buffers, rebuilt from "
                                                                                      "the configuration",
        r"^(?!decoder_focal\.|linear_pred2\.)": "the per-frame branch (converted above)",
    })
    converted.state.update(head.state)
    for reason, keys in head.dropped.items():
        if reason.startswith("index buffers"):
            converted.dropped.setdefault(reason, []).extend(f"decode_head.{k}" for k in keys)
    return converted
