"""Multi-scale deformable attention (Zhu et al., Deformable DETR, ICLR 2021), plain PyTorch.

Each query attends to ``points`` sampled locations on each of ``levels`` feature maps per
head, around its reference point; the offsets and the attention weights are linear
functions of the query. Sampling is bilinear (``grid_sample``, zero padding,
``align_corners=False``), as in the official CUDA kernel and its PyTorch reference.

The value projection is split from the attention so that a caller can project each level
once and reuse it: TFC projects the levels it reuses from the key frame on the key frame
only. The attention itself takes any set of queries with their own reference points, so
running it on a gathered subset of points costs in proportion to their number (the sparse
entry point TFC uses on non-key frames; the dense use is the same call on every point).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over a feature pyramid, for queries given with reference points."""

    def __init__(self, dim: int, heads: int = 8, levels: int = 4, points: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """Deformable DETR's initialisation: offsets start on rays in ``heads`` directions, point
        i at distance i + 1; uniform attention; Xavier value and output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        directions = torch.stack([angles.cos(), angles.sin()], -1)
        directions = directions / directions.abs().max(-1, keepdim=True).values
        grid = directions.view(self.heads, 1, 1, 2).repeat(1, self.levels, self.points, 1)
        grid *= torch.arange(1, self.points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def project_values(self, level: torch.Tensor) -> torch.Tensor:
        """One pyramid level (B, dim, H, W) -> its values split by head, (B * heads, dim / heads, H, W)."""
        batch, _, height, width = level.shape
        values = self.value_proj(level.flatten(2).transpose(1, 2))  # (B, HW, dim)
        return values.transpose(1, 2).reshape(batch * self.heads, self.dim // self.heads, height, width)

    def forward(self, queries: torch.Tensor, reference_points: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
        """Attend from ``queries`` (B, Q, dim) at ``reference_points`` (B, Q, 2), normalised (x, y)
        in [0, 1], over projected ``values`` (one per level, from :meth:`project_values`);
        returns (B, Q, dim)."""
        if len(values) != self.levels:
            raise ValueError(f"expected {self.levels} value levels, got {len(values)}")
        batch, count, _ = queries.shape
        heads, levels, points = self.heads, self.levels, self.points
        offsets = self.sampling_offsets(queries).view(batch, count, heads, levels, points, 2)
        weights = self.attention_weights(queries).view(batch, count, heads, levels * points).softmax(-1)
        # Offsets are in pixels of each level: normalise by its (W, H).
        sizes = torch.tensor([[v.shape[-1], v.shape[-2]] for v in values], dtype=queries.dtype, device=queries.device)
        locations = reference_points[:, :, None, None, None, :] + offsets / sizes[None, None, None, :, None, :]
        # grid_sample wants [-1, 1] and one grid per (batch, head): (B * heads, Q, points, 2) per level.
        grids = (2.0 * locations - 1.0).permute(0, 2, 1, 3, 4, 5).flatten(0, 1)
        sampled = [
            F.grid_sample(value, grids[:, :, level], mode="bilinear", padding_mode="zeros", align_corners=False)
            for level, value in enumerate(values)
        ]  # each (B * heads, dim / heads, Q, points)
        sampled = torch.cat(sampled, dim=-1)  # (B * heads, dim / heads, Q, levels * points)
        weights = weights.permute(0, 2, 1, 3).flatten(0, 1).unsqueeze(1)  # (B * heads, 1, Q, levels * points)
        attended = (sampled * weights).sum(-1)  # (B * heads, dim / heads, Q)
        attended = attended.view(batch, self.dim, count).transpose(1, 2)
        return self.output_proj(attended)


class DeformableAttentionBlock(nn.Module):
    """Deformable attention alone, as TFC's Eq. 8-9 print MSDA: the refined point is the attention's
    output (sum over heads of W_m times the weighted samples), with no residual, FFN or norm."""

    def __init__(self, dim: int, heads: int = 8, levels: int = 4, points: int = 4) -> None:
        super().__init__()
        self.attention = MultiScaleDeformableAttention(dim, heads, levels, points)

    def forward(self, queries: torch.Tensor, reference_points: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
        return self.attention(queries, reference_points, values)


class DeformableRefinement(nn.Module):
    """A Deformable DETR encoder layer for a set of query points: deformable attention over the
    pyramid, then an FFN, each with a residual connection and post-norm."""

    def __init__(self, dim: int, heads: int = 8, levels: int = 4, points: int = 4, ffn: int = 1024) -> None:
        super().__init__()
        self.attention = MultiScaleDeformableAttention(dim, heads, levels, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(), nn.Linear(ffn, dim))
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, queries: torch.Tensor, reference_points: torch.Tensor, values: list[torch.Tensor]) -> torch.Tensor:
        """(B, Q, dim) queries at (B, Q, 2) reference points -> refined (B, Q, dim)."""
        queries = self.norm1(queries + self.attention(queries, reference_points, values))
        return self.norm2(queries + self.ffn(queries))


def pixel_centres(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised (x, y) centres of an H x W grid's pixels, (H * W, 2), row-major."""
    ys = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
