"""STT: sparse temporal transformer (Li et al., "Video Semantic Segmentation via Sparse
Temporal Transformer", ACM MM 2021).

Every frame t runs PSPNet's encoder (a dilated ResNet at output stride 8), giving F_t.
The encoder features of the previous M frames are kept in memory. Query selection keeps
the hard points of F_t, those near predicted semantic boundaries; key selection takes,
for each query and each memory frame at temporal distance d, the window of positions
around the query's location whose radius grows with d (start size s = 1, expansion 1,
end size e = 4: 3x3, 5x5, 7x7, then 9x9, 407 keys per query for M = 7, since motion
grows with temporal distance). One multi-head attention updates the selected queries;
every other point passes through unchanged; PSPNet's pyramid pooling head decodes the
result. M = 0 is PSPNet alone. The sweep axis is M, not a key-frame interval: there are
no key frames.

What the paper leaves open, and what is chosen here:

* Where "hard" comes from: a 1x1 classifier on F_t (trained with cross-entropy, like
  PSPNet's auxiliary head); a point is hard iff its predicted class is not constant over
  its r x r neighbourhood, r = 5 (the neighbouring ratio), i.e. it lies within two
  feature positions (16 pixels) of a predicted boundary.
* The attention: one layer; queries are linear projections of the selected points of F_t,
  keys and values 1x1 projections of each memory frame made once, when the frame enters
  the memory (so a frame costs one projection of its own features plus attention of the
  selected queries over their 407 keys: cost grows with the number of queries and with
  M, never with H*W*M); a learned bias per (temporal distance, spatial offset, head) adds
  relative position; keys outside the frame are masked out (not clamped to the border);
  the output projection is added to the query's features (residual); no FFN.
* The memory holds encoder features (before the transformer), most recent first, and is
  emptied at each new video; early frames of a video attend to the frames they have.
* Training: clips of M + 1 = 8 consecutive frames, cross-entropy on the last frame's
  output plus the selection classifier's cross-entropy. PSPNet (encoder and head) stays
  as trained for ``perframe:pspnet-*``; the attention and the selection classifier learn.
  So M = 0 is exactly the per-frame PSPNet row, and every difference between M = 0 and
  M > 0 comes from the temporal attention. (Retraining the head as well was measured on
  the synthetic set: M = 0 then differs from PSPNet, mIoU 90.79 vs 90.05 and mVC8 98.35
  vs 98.62, which mixes longer head training into the memory sweep.) That is the synthetic
  recipe's setting; STT itself trains the whole network (supplementary Sec. 1.3), which the
  paper recipes (``vssbench/recipes/stt.yaml``, ``cityscapes`` and ``vspw``) do through their
  ``trainable`` rules.
* FLOPs are counted with a given share of the points selected, evenly spread, since the
  share depends on the image and the weights: the share measured over the steps run so
  far at this M (in ``bench run``, the whole evaluation), else
  :data:`COUNTED_QUERY_FRACTION` (``bench profile`` on random frames). The row's cost
  block records both the counted and the measured share.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.methods.base import VideoMethod, register_method
from vssbench.methods.segmentors import SingleMapSegmentor, build_segmentor, cross_entropy

MAX_MEMORY = 7
WINDOW_START, WINDOW_END, WINDOW_EXPANSION = 1, 4, 1  # radii: window side = 2 * radius + 1
NEIGHBOURING_RATIO = 5
COUNTED_QUERY_FRACTION = 0.25


def window_radius(distance: int) -> int:
    """Key-window radius for a memory frame ``distance`` frames back (1 = the previous frame)."""
    return min(WINDOW_START + (distance - 1) * WINDOW_EXPANSION, WINDOW_END)


def window_offsets(radius: int, device: torch.device | None = None) -> torch.Tensor:
    """(K, 2) integer (dy, dx) offsets of a (2r+1) x (2r+1) window, row-major."""
    span = torch.arange(-radius, radius + 1, device=device)
    return torch.cartesian_prod(span, span)


def hard_points(logits: torch.Tensor, ratio: int = NEIGHBOURING_RATIO) -> torch.Tensor:
    """(B, C, h, w) class scores -> (B, h, w) bool: the predicted class varies within the ratio x ratio neighbourhood."""
    labels = logits.argmax(1, keepdim=True).float()
    high = F.max_pool2d(labels, ratio, 1, ratio // 2)
    low = -F.max_pool2d(-labels, ratio, 1, ratio // 2)
    return (high != low)[:, 0]


class SparseTemporalAttention(nn.Module):
    """Multi-head attention of selected query points over growing windows of memory frames."""

    def __init__(self, channels: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by {heads} heads")
        self.dim, self.heads = dim, heads
        self.query = nn.Linear(channels, dim)
        self.key_value = nn.Conv2d(channels, 2 * dim, 1)
        self.output = nn.Linear(dim, channels)
        side = 2 * WINDOW_END + 1
        self.position_bias = nn.Parameter(torch.zeros(MAX_MEMORY, side * side, heads))

    def encode_memory(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) encoder features -> their keys and values (B, h, w, 2 * dim), stored in memory
        channels-last, so that gathering a window reads contiguous rows."""
        return self.key_value(features).permute(0, 2, 3, 1).contiguous()

    @staticmethod
    def _key_layout(memory: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For the keys of ``memory`` frames, in order: the memory frame, the (dy, dx) offset and
        the row of the position-bias table, (distance - 1) * side^2 + offset index."""
        side = 2 * WINDOW_END + 1
        frames, offsets, rows = [], [], []
        for distance in range(1, memory + 1):
            window = window_offsets(window_radius(distance), device)
            frames.append(torch.full((len(window),), distance - 1, device=device))
            offsets.append(window)
            rows.append((distance - 1) * side * side + (window[:, 0] + WINDOW_END) * side + window[:, 1] + WINDOW_END)
        return torch.cat(frames), torch.cat(offsets), torch.cat(rows)

    def forward(self, features: torch.Tensor, memory: list[torch.Tensor], selected: torch.Tensor) -> torch.Tensor:
        """Update the ``selected`` (B, h, w) points of ``features`` from ``memory`` (most recent first)."""
        if not memory or not bool(selected.any()):
            return features
        height, width = features.shape[-2:]
        b, y, x = selected.nonzero().unbind(1)  # image, row and column of each selected point
        points = features.permute(0, 2, 3, 1)[b, y, x]  # (n, C)
        # Every key of every memory frame in one gather: (memory frame, dy, dx) per key.
        frame_of_key, offsets, bias_index = self._key_layout(len(memory), features.device)
        ky, kx = y[:, None] + offsets[:, 0], x[:, None] + offsets[:, 1]  # (n, L)
        inside = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)
        gathered = torch.stack(memory)[frame_of_key, b[:, None], ky.clamp(0, height - 1), kx.clamp(0, width - 1)]
        key, value = gathered.split(self.dim, dim=-1)  # (n, L, dim) each
        bias = self.position_bias.flatten(0, 1)[bias_index]  # (L, heads)
        head_dim = self.dim // self.heads
        # Batched products per (query, head); matmul rather than einsum, which fvcore counts only approximately.
        query = self.query(points).view(-1, self.heads, head_dim, 1)
        key = key.unflatten(-1, (self.heads, head_dim)).transpose(1, 2)  # (n, heads, L, head_dim)
        value = value.unflatten(-1, (self.heads, head_dim)).transpose(1, 2)
        logits = torch.matmul(key, query)[..., 0] / math.sqrt(head_dim) + bias.t()  # (n, heads, L)
        logits = logits.masked_fill(~inside[:, None, :], float("-inf"))
        attended = torch.matmul(logits.softmax(-1).unsqueeze(2), value).reshape(-1, self.dim)
        updated = features.permute(0, 2, 3, 1).clone()
        updated[b, y, x] = points + self.output(attended)
        return updated.permute(0, 3, 1, 2)


@register_method("stt")
class STT(VideoMethod):
    """Sparse temporal transformer: hard points of each frame attend to windows of the previous M frames."""

    presets = {
        "r18": dict(segmentor="pspnet-r18", dim=256, heads=8),
        "tiny": dict(segmentor="pspnet-tiny", dim=64, heads=4),
    }
    default_preset = "tiny"
    uses_key_frames = False
    sweep_axis = "memory_frames"

    def __init__(self, preset: str, variant: str, num_classes: int, segmentor: str, dim: int, heads: int) -> None:
        super().__init__(preset, variant, num_classes)
        self._segmentor_preset = segmentor
        self.segmentor: SingleMapSegmentor = build_segmentor(segmentor, num_classes)
        channels = self.segmentor.feature_channels[0]
        self.selector = nn.Conv2d(channels, num_classes, 1)
        self.attention = SparseTemporalAttention(channels, dim, heads)
        self.segmentor.requires_grad_(False)
        self.memory_frames = MAX_MEMORY
        self._memory: list[torch.Tensor] = []
        self._selection_counts: dict[int, list[int]] = {}  # M -> [selected points, points] over its steps

    @property
    def segmentor_preset(self) -> str:
        return self._segmentor_preset

    @property
    def memory_frames(self) -> int:
        """M, the number of previous frames attended to (the sweep axis)."""
        return self._memory_frames

    @memory_frames.setter
    def memory_frames(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= MAX_MEMORY:
            raise ValueError(f"STT memory length must be an integer in 0..{MAX_MEMORY}, got {value!r}")
        self._memory_frames = value

    def reset(self) -> None:
        self._memory = []

    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        return self._step(frame, self._select)

    def _select(self, features: torch.Tensor) -> torch.Tensor:
        selected = hard_points(self.selector(features))
        counts = self._selection_counts.setdefault(self.memory_frames, [0, 0])
        counts[0] += int(selected.sum())
        counts[1] += selected.numel()
        return selected

    def _step(self, frame: torch.Tensor, select: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        (features,) = self.segmentor.extract(frame)
        refined = features
        if self.memory_frames and self._memory:
            refined = self.attention(features, self._memory, select(features))
        if self.memory_frames:
            self._memory = [self.attention.encode_memory(features), *self._memory][: self.memory_frames]
        return self.segmentor.decode([refined], frame.shape[-2:])

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        frames, label = batch["frames"], batch["labels"][:, -1]
        (features,) = self.segmentor.extract(frames.flatten(0, 1))
        features = features.unflatten(0, frames.shape[:2])
        memory = [self.attention.encode_memory(features[:, t]) for t in range(frames.shape[1] - 2, -1, -1)]
        current = features[:, -1]
        selector_logits = self.selector(current)
        refined = self.attention(current, memory, hard_points(selector_logits.detach()))
        return {"cross_entropy": self.segmentor.head_loss([refined], label)["cross_entropy"],
                "selection": cross_entropy(selector_logits, label)}

    def loss_terms(self) -> tuple[str, ...]:
        return ("cross_entropy", "selection")

    def cost_paths(self, frame: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
        """Both paths are one step with M frames in memory and the counted share of the points
        selected, evenly spread."""
        fraction = self._counted_fraction()

        def counted_share(features: torch.Tensor) -> torch.Tensor:
            height, width = (int(n) for n in features.shape[-2:])  # plain ints, also while fvcore traces
            chosen = torch.linspace(0, height * width - 1, max(1, round(fraction * height * width)),
                                    device=features.device).long()
            selected = torch.zeros(height * width, dtype=torch.bool, device=features.device)
            selected[chosen] = True
            return selected.view(1, height, width)

        self.reset()
        for _ in range(self.memory_frames):
            self._step(frame, counted_share)

        def path() -> torch.Tensor:
            memory = list(self._memory)
            scores = self._step(frame, counted_share)
            written, self._memory = self._memory, memory
            # A tracer keeps only what the output depends on; the memory entry this step wrote is
            # part of its cost, so the output is tied to it (by a zero-weighted sum, which is free).
            return scores + 0 * written[0].sum() if written else scores

        return {"key": path, "nonkey": path}

    def _measured_fraction(self) -> float | None:
        selected, points = self._selection_counts.get(self.memory_frames, (0, 0))
        return selected / points if points else None

    def _counted_fraction(self) -> float:
        measured = self._measured_fraction()
        return COUNTED_QUERY_FRACTION if measured is None else measured

    def cost_settings(self) -> dict:
        measured = self._measured_fraction()
        return {"memory_frames": self.memory_frames, "query_fraction_counted": round(self._counted_fraction(), 4),
                "query_fraction_measured": None if measured is None else round(measured, 4)}
