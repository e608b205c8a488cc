"""Bilinear warping of feature maps or mask logits by a dense flow field.

``flow[:, 0]`` and ``flow[:, 1]`` are x and y displacements in pixels of the flow's own
grid, pointing from each output pixel to where it is sampled in the source: warping the
key frame's maps with the flow from the current frame to the key frame gives maps aligned
with the current frame (DFF, Accel, MPVSS all warp this way).

A flow of another resolution is resized bilinearly to the maps and its vectors scaled by
the width ratio, as mmtracking's ``flow_warp_feats`` does. Unlike that function, the
sampling grid here is exact: a zero flow returns the input unchanged (mmtracking
normalises by W while sampling with ``align_corners=True``, which shifts by up to one
pixel at zero flow). Out-of-frame samples take the border value, as in mmtracking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a (N, 2, h, w) flow to ``size`` and rescale its vectors to the new grid."""
    if tuple(flow.shape[-2:]) == tuple(size):
        return flow
    scale_x = size[1] / flow.shape[-1]
    scale_y = size[0] / flow.shape[-2]
    resized = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return resized * torch.tensor([scale_x, scale_y], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)


def flow_warp(maps: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``maps`` (N, C, H, W) at (x + flow_x, y + flow_y); ``flow`` is (N, 2, h, w).

    Sampling runs in float64 and is rounded back: the normalise/unnormalise round trip of
    grid coordinates then stays far below float32 precision, so a zero (or integer) flow
    reproduces its input bit for bit. Warping is memory-bound, so this costs little.
    """
    height, width = maps.shape[-2:]
    flow = resize_flow(flow, (height, width)).double()
    ys = torch.arange(height, dtype=torch.float64, device=flow.device).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float64, device=flow.device).view(1, 1, width)
    # Pixel coordinates -> [-1, 1] with align_corners=True: pixel 0 -> -1, pixel W-1 -> +1.
    grid_x = (xs + flow[:, 0]) * (2.0 / max(width - 1, 1)) - 1.0
    grid_y = (ys + flow[:, 1]) * (2.0 / max(height - 1, 1)) - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)
    warped = F.grid_sample(maps.double(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped.to(maps.dtype)
