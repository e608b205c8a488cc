"""RAFT (Teed and Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow", ECCV 2020), as
princeton-vl/RAFT's ``core/`` computes it at test time; large and small as data (:class:`RAFTConfig`).

* Feature encoder g (``fnet``, instance norm) on both frames and context encoder h (``cnet``, batch
  norm for large, none for small) on the first: a 7x7 stride-2 conv, three stages of two residual
  (large) or bottleneck (small) blocks, stride 8 overall, a 1x1 output conv (Sec. 3.1).
* All-pairs correlation C = g(I1) g(I2)^T / sqrt(D) at 1/8, pooled over its last two dimensions into
  a 4-level pyramid (Sec. 3.2); a lookup samples each level bilinearly on a (2r+1)^2 square around the
  current correspondence x + f(x), scaled to the level (r 4 large, 3 small).
* The update operator (Sec. 3.3): a motion encoder of the correlation features and the flow, a
  convolutional GRU (separable 1x5 and 5x1 for large, 3x3 for small) whose hidden state starts at
  tanh of h's first part with relu of its second as context, a flow head predicting the update
  Delta f, so f_{k+1} = f_k + Delta f; ``iters`` updates from f_0 = 0 (or ``flow_init``).
* Upsampling to full resolution: large predicts a convex combination of each coarse pixel's 3x3
  neighbours per fine pixel (the mask head, x 0.25 as the official code); small upsamples bilinearly
  (``upflow8``).

Inputs are RGB frames with values 0..255, (B, 3, H, W) with H and W multiples of 8
(:class:`InputPadder` pads, as the official demo and VSPW's TC_cal.py do). The module names are the
official ones, so princeton-vl's checkpoints (``raft-things.pth`` etc., DataParallel's ``module.``)
load as they are; torchvision's ports (``raft_large``/``raft_small``, the ``*_V1`` and ``*_V2``
weights) through :func:`from_torchvision`. :func:`load_raft` reads either, detected from content.
Computation follows the input's dtype (the official code casts features to float32; here float64
stays float64, which the golden tests use).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vssbench.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD
from vssbench.methods.keymap import Converted, rename


@dataclass(frozen=True)
class RAFTConfig:
    """One RAFT size (``core/raft.py``'s ``args.small`` branches)."""

    block: str  # "residual" (large) or "bottleneck" (small) encoder blocks
    widths: tuple[int, int, int]  # the encoders' three stages (the stem is as wide as the first)
    feature_dim: int  # fnet's output channels
    hidden_dim: int
    context_dim: int
    corr_levels: int
    corr_radius: int
    context_norm: str  # cnet's norm: "batch" or "none"


CONFIGS = {
    "large": RAFTConfig("residual", (64, 96, 128), 256, 128, 128, 4, 4, "batch"),
    "small": RAFTConfig("bottleneck", (32, 64, 96), 128, 96, 64, 4, 3, "none"),
}


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # no affine parameters, statistics of each image
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Sequential()
    raise ValueError(f"unknown norm {kind!r}; expected instance, batch or none")


class ResidualBlock(nn.Module):
    """Two 3x3 convs (with bias) each followed by norm and ReLU, a 1x1 projection when strided; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1)
        self.norm1, self.norm2 = _norm(norm, planes), _norm(norm, planes)
        self.downsample = None
        if stride != 1:  # the official block registers the projection's norm twice: as norm3 and downsample.1
            self.norm3 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride), self.norm3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class BottleneckBlock(nn.Module):
    """1x1 to a quarter of the width, 3x3 (strided), 1x1 back, each with norm and ReLU; as ResidualBlock."""

    def __init__(self, in_planes: int, planes: int, norm: str, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes // 4, 1)
        self.conv2 = nn.Conv2d(planes // 4, planes // 4, 3, stride, 1)
        self.conv3 = nn.Conv2d(planes // 4, planes, 1)
        self.norm1, self.norm2, self.norm3 = _norm(norm, planes // 4), _norm(norm, planes // 4), _norm(norm, planes)
        self.downsample = None
        if stride != 1:
            self.norm4 = _norm(norm, planes)
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride), self.norm4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = F.relu(self.norm2(self.conv2(y)))
        y = F.relu(self.norm3(self.conv3(y)))
        return F.relu((x if self.downsample is None else self.downsample(x)) + y)


class Encoder(nn.Module):
    """The feature and context encoders (``BasicEncoder``, ``SmallEncoder``): 1/8 of the input."""

    def __init__(self, config: RAFTConfig, output_dim: int, norm: str) -> None:
        super().__init__()
        block = ResidualBlock if config.block == "residual" else BottleneckBlock
        stem = config.widths[0]
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3)
        self.norm1 = _norm(norm, stem)
        layers, in_planes = [], stem
        for width, stride in zip(config.widths, (1, 2, 2)):
            layers.append(nn.Sequential(block(in_planes, width, norm, stride), block(width, width, norm, 1)))
            in_planes = width
        self.layer1, self.layer2, self.layer3 = layers
        self.conv2 = nn.Conv2d(in_planes, output_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.conv2(self.layer3(self.layer2(self.layer1(x))))


class CorrPyramid:
    """All-pairs correlation of two 1/8 feature maps, average-pooled into ``levels`` levels (Sec. 3.2)."""

    def __init__(self, fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int, radius: int) -> None:
        batch, dim, height, width = fmap1.shape
        corr = fmap1.flatten(2).transpose(1, 2) @ fmap2.flatten(2) / dim ** 0.5  # (B, H*W, H*W)
        corr = corr.reshape(batch * height * width, 1, height, width)
        self.levels = [corr]
        for _ in range(levels - 1):
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.levels.append(corr)
        self.radius = radius

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W) correspondences (x, y) -> (B, levels * (2r+1)^2, H, W) correlation features. The
        window's first axis offsets x and its second y, the official ``meshgrid(dy, dx)`` order."""
        r = self.radius
        batch, _, height, width = coords.shape
        steps = torch.linspace(-r, r, 2 * r + 1, dtype=coords.dtype, device=coords.device)
        delta = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).view(1, 2 * r + 1, 2 * r + 1, 2)
        centre = coords.permute(0, 2, 3, 1).reshape(batch * height * width, 1, 1, 2)
        out = []
        for level, corr in enumerate(self.levels):
            points = centre / 2 ** level + delta
            out.append(sample_pixels(corr, points).view(batch, height, width, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


def sample_pixels(image: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of ``image`` at pixel coordinates (x, y) (``bilinear_sampler``: grid_sample with
    aligned corners, zeros outside)."""
    height, width = image.shape[-2:]
    x, y = points.split([1, 1], dim=-1)
    grid = torch.cat([2 * x / (width - 1) - 1, 2 * y / (height - 1) - 1], dim=-1)
    return F.grid_sample(image, grid, align_corners=True)


class MotionEncoder(nn.Module):
    """Correlation features and flow -> motion features, the flow appended (``Basic``/``SmallMotionEncoder``)."""

    def __init__(self, config: RAFTConfig) -> None:
        super().__init__()
        planes = config.corr_levels * (2 * config.corr_radius + 1) ** 2
        if config.block == "residual":
            self.convc1 = nn.Conv2d(planes, 256, 1)
            self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
            self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
            self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
            self.conv = nn.Conv2d(64 + 192, 128 - 2, 3, padding=1)
        else:
            self.convc1 = nn.Conv2d(planes, 96, 1)
            self.convc2 = None
            self.convf1 = nn.Conv2d(2, 64, 7, padding=3)
            self.convf2 = nn.Conv2d(64, 32, 3, padding=1)
            self.conv = nn.Conv2d(128, 80, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        cor = F.relu(self.convc1(corr))
        if self.convc2 is not None:
            cor = F.relu(self.convc2(cor))
        flo = F.relu(self.convf2(F.relu(self.convf1(flow))))
        return torch.cat([F.relu(self.conv(torch.cat([cor, flo], dim=1))), flow], dim=1)


class ConvGRU(nn.Module):
    """The convolutional GRU of the update operator (Sec. 3.3): h = (1 - z) h + z q with
    z, r = sigmoid(conv([h, x])), q = tanh(conv([r h, x])). One 3x3 cell (small: ``convz``, ``convr``,
    ``convq``) or a horizontal 1x5 then a vertical 5x1 cell (large's ``SepConvGRU``: ``convz1`` ... ``convq2``)."""

    def __init__(self, hidden_dim: int, input_dim: int, kernels: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.suffixes = [""] if len(kernels) == 1 else [str(i + 1) for i in range(len(kernels))]
        for suffix, kernel in zip(self.suffixes, kernels):
            for gate in "zrq":
                setattr(self, f"conv{gate}{suffix}", nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel,
                                                              padding=(kernel[0] // 2, kernel[1] // 2)))

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        for suffix in self.suffixes:
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(getattr(self, f"convz{suffix}")(hx))
            r = torch.sigmoid(getattr(self, f"convr{suffix}")(hx))
            q = torch.tanh(getattr(self, f"convq{suffix}")(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
        return h


class FlowHead(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """Motion encoder, GRU, flow head and (large) the upsampling mask head (``Basic``/``SmallUpdateBlock``)."""

    def __init__(self, config: RAFTConfig) -> None:
        super().__init__()
        large = config.block == "residual"
        self.encoder = MotionEncoder(config)
        motion = 128 if large else 82
        kernels = ((1, 5), (5, 1)) if large else ((3, 3),)
        self.gru = ConvGRU(config.hidden_dim, config.context_dim + motion, kernels)
        self.flow_head = FlowHead(config.hidden_dim, 256 if large else 128)
        self.mask = (nn.Sequential(nn.Conv2d(config.hidden_dim, 256, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(256, 64 * 9, 1)) if large else None)

    def forward(self, net: torch.Tensor, inp: torch.Tensor, corr: torch.Tensor,
                flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        net = self.gru(net, torch.cat([inp, self.encoder(flow, corr)], dim=1))
        mask = 0.25 * self.mask(net) if self.mask is not None else None  # x 0.25: the official gradient scaling
        return net, mask, self.flow_head(net)


def coords_grid(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates, x then y."""
    ys, xs = torch.meshgrid(torch.arange(height, device=like.device), torch.arange(width, device=like.device),
                            indexing="ij")
    return torch.stack([xs, ys]).to(like.dtype)[None].repeat(batch, 1, 1, 1)


def convex_upsample(flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow at 1/8 -> (B, 2, 8H, 8W): each fine pixel a softmax-weighted combination of its coarse
    pixel's 3x3 neighbourhood of 8 x the flow (Sec. 3.3, appendix B)."""
    batch, _, height, width = flow.shape
    mask = torch.softmax(mask.view(batch, 1, 9, 8, 8, height, width), dim=2)
    neighbours = F.unfold(8 * flow, [3, 3], padding=1).view(batch, 2, 9, 1, 1, height, width)
    up = torch.sum(mask * neighbours, dim=2).permute(0, 1, 4, 2, 5, 3)
    return up.reshape(batch, 2, 8 * height, 8 * width)


def upflow8(flow: torch.Tensor) -> torch.Tensor:
    """RAFT-small's upsampling: 8 x the flow, bilinear with aligned corners."""
    return 8 * F.interpolate(flow, size=(8 * flow.shape[2], 8 * flow.shape[3]), mode="bilinear", align_corners=True)


class RAFT(nn.Module):
    """RAFT large or small; ``forward(image1, image2, iters)`` -> (flow at 1/8, flow at full resolution),
    the flow from ``image1`` to ``image2`` (``test_mode=True`` of the official forward)."""

    def __init__(self, size: str = "large") -> None:
        super().__init__()
        if size not in CONFIGS:
            raise ValueError(f"unknown RAFT size {size!r}; expected one of {', '.join(CONFIGS)}")
        self.size, self.config = size, CONFIGS[size]
        config = self.config
        self.fnet = Encoder(config, config.feature_dim, "instance")
        self.cnet = Encoder(config, config.hidden_dim + config.context_dim, config.context_norm)
        self.update_block = UpdateBlock(config)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor, iters: int = 12,
                flow_init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        image1, image2 = 2 * (image1 / 255.0) - 1.0, 2 * (image2 / 255.0) - 1.0
        fmap1, fmap2 = self.fnet(torch.cat([image1, image2])).chunk(2)  # g on both frames, one batch
        pyramid = CorrPyramid(fmap1, fmap2, self.config.corr_levels, self.config.corr_radius)
        net, inp = torch.split(self.cnet(image1), [self.config.hidden_dim, self.config.context_dim], dim=1)
        net, inp = torch.tanh(net), torch.relu(inp)
        coords0 = coords_grid(image1.shape[0], image1.shape[2] // 8, image1.shape[3] // 8, image1)
        coords1 = coords0 if flow_init is None else coords0 + flow_init
        mask = None
        for _ in range(iters):
            coords1 = coords1.detach()  # as the official loop: no gradient through earlier lookups
            corr = pyramid.lookup(coords1)
            net, mask, delta = self.update_block(net, inp, corr, coords1 - coords0)
            coords1 = coords1 + delta  # f_{k+1} = f_k + Delta f
        flow = coords1 - coords0
        return flow, (convex_upsample(flow, mask) if mask is not None else upflow8(flow))


class ImageNetRAFT(RAFT):
    """RAFT on frames normalised with ImageNet's mean and std, as vssbench's datasets give them (TFC's
    ``flow-warp-raft``): the normalisation is undone to RGB 0..255, the frames zero-padded to multiples of 8
    (:class:`InputPadder`), and ``forward(frame1, frame2)`` returns the full-resolution flow from ``frame1``
    to ``frame2`` after ``iterations`` updates. Its tensors are RAFT's, so RAFT's weights load into it."""

    def __init__(self, size: str = "large", iterations: int = 12) -> None:
        super().__init__(size)
        self.iterations = iterations
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        images = [(frame * self.std + self.mean) * 255.0 for frame in (frame1, frame2)]
        return frame_flow(super().forward, *images, iters=self.iterations)


MIN_SIDE = 128  # below it the coarsest of the four correlation levels is one pixel wide (frame_flow)


def flow_size(height: int, width: int) -> tuple[int, int]:
    """The size RAFT sees a frame of this size at: its own, or scaled up to a short side of 128 (multiples of 8)."""
    scale = max(1.0, MIN_SIDE / min(height, width))
    return (height, width) if scale == 1.0 else (math.ceil(height * scale / 8) * 8, math.ceil(width * scale / 8) * 8)


def frame_flow(raft: Callable[..., tuple[torch.Tensor, torch.Tensor]], image1: torch.Tensor, image2: torch.Tensor,
               iters: int) -> torch.Tensor:
    """The full-resolution flow from ``image1`` to ``image2`` ((B, 3, H, W), RGB 0..255, any size), as the
    official demo and VSPW's TC_cal.py compute it: zero-padded to multiples of 8 (:class:`InputPadder`),
    the padding removed from the flow. RAFT's four-level correlation pyramid needs at least 128 pixels a
    side: below it the coarsest level is one pixel wide, the lookup divides by W - 1 = 0 and every flow is
    NaN (in princeton-vl's code too; torchvision states a minimum of 128 x 128). Such frames are scaled up
    bilinearly to :func:`flow_size` and the flow brought back to their size and scale."""
    height, width = image1.shape[-2:]
    size = flow_size(height, width)
    if size != (height, width):
        image1, image2 = (F.interpolate(image, size=size, mode="bilinear", align_corners=False)
                          for image in (image1, image2))
    padder = InputPadder(*size)
    flow = padder.unpad(raft(padder(image1), padder(image2), iters=iters)[1])
    if size != (height, width):
        flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
        flow = flow * torch.tensor([width / size[1], height / size[0]], dtype=flow.dtype,
                                   device=flow.device).view(1, 2, 1, 1)
    return flow


class InputPadder:
    """Zero padding to multiples of 8, split evenly between the two sides (``InputPadder``'s default
    ``sintel`` mode, which VSPW's TC_cal.py uses), and its removal."""

    def __init__(self, height: int, width: int) -> None:
        pad_h, pad_w = (-height) % 8, (-width) % 8
        self.pad = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, self.pad, mode="constant")

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return x[..., self.pad[2]:height - self.pad[3], self.pad[0]:width - self.pad[1]]


# --------------------------------------------------------------------------- weights


# torchvision's port (torchvision/models/optical_flow/raft.py) -> the official names. Its
# Conv2dNormActivation holds a block's conv at .0 and its norm at .1; the context encoder of raft_small
# has no norm, so its convs sit at .0 alone.
_TORCHVISION_RULES = [
    (r"^feature_encoder\.", "fnet."), (r"^context_encoder\.", "cnet."),
    (r"^(fnet|cnet)\.convnormrelu\.0\.", r"\1.conv1."), (r"^(fnet|cnet)\.convnormrelu\.1\.", r"\1.norm1."),
    (r"^(fnet|cnet)\.conv\.", r"\1.conv2."),
    (r"\.convnormrelu(\d)\.0\.", r".conv\1."), (r"\.convnormrelu(\d)\.1\.", r".norm\1."),
    (r"\.downsample\.0\.", ".downsample.0."),
    (r"^update_block\.motion_encoder\.convcorr(\d)\.0\.", r"update_block.encoder.convc\1."),
    (r"^update_block\.motion_encoder\.convflow(\d)\.0\.", r"update_block.encoder.convf\1."),
    (r"^update_block\.motion_encoder\.conv\.0\.", "update_block.encoder.conv."),
    (r"^update_block\.recurrent_block\.convgru(\d)\.conv([zrq])\.", r"update_block.gru.conv\2\1."),
    (r"^update_block\.flow_head\.", "update_block.flow_head."),
    (r"^mask_predictor\.convrelu\.0\.", "update_block.mask.0."), (r"^mask_predictor\.conv\.", "update_block.mask.2."),
]


def from_source(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str, str]:
    """Either layout's state dict (``module.`` removed) -> (the official names, the layout, the size)."""
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    if "fnet.conv1.weight" in state:
        layout, stem = "princeton-vl", state["fnet.conv1.weight"]
    elif "feature_encoder.convnormrelu.0.weight" in state:
        layout, stem = "torchvision", state["feature_encoder.convnormrelu.0.weight"]
    else:
        raise RAFTWeightsError("neither princeton-vl's RAFT (fnet.*, update_block.*) nor torchvision's "
                               "(feature_encoder.*, update_block.*); expected RAFT weights")
    size = "large" if stem.shape[0] == 64 else "small"
    return (from_torchvision(state, size) if layout == "torchvision" else state), layout, size


def converted(state: dict[str, torch.Tensor], target: RAFT) -> Converted:
    """RAFT weights of either layout for ``target`` (a flow component: TFC's ``flow-warp-raft``); a size
    other than the target's is an error naming both."""
    official, layout, size = from_source(state)
    if size != target.size:
        raise RAFTWeightsError(f"RAFT-{size} weights ({layout}); the flow network here is RAFT-{target.size}")
    return Converted(official)


def from_torchvision(state: dict[str, torch.Tensor], size: str) -> dict[str, torch.Tensor]:
    """A torchvision ``raft_large``/``raft_small`` state dict -> the official names (a small RAFT's single
    GRU cell takes no suffix; a strided block's norm is registered twice, as ``norm3``/``norm4`` too)."""
    out = rename(state, _TORCHVISION_RULES).state
    if size == "small":
        out = {k.replace("update_block.gru.convz1.", "update_block.gru.convz.")
                .replace("update_block.gru.convr1.", "update_block.gru.convr.")
                .replace("update_block.gru.convq1.", "update_block.gru.convq."): v for k, v in out.items()}
    twice = "norm4" if size == "small" else "norm3"
    for key in list(out):
        if ".downsample.1." in key:
            out[key.replace(".downsample.1.", f".{twice}.")] = out[key]
    return out


@dataclass(frozen=True)
class RAFTWeights:
    """What :func:`load_raft` read: the file, its sha256, the layout it was in and the size it gave."""

    file: str
    sha256: str
    layout: str  # "princeton-vl" or "torchvision"
    size: str

    def as_record(self) -> dict[str, str]:
        return {"file": self.file, "sha256": self.sha256, "layout": self.layout, "size": self.size}


class RAFTWeightsError(ValueError):
    """A file that is not RAFT weights of a known layout."""


def load_raft(path: str | Path) -> tuple[RAFT, RAFTWeights]:
    """RAFT with the weights of ``path``: princeton-vl's checkpoints (``raft-things.pth``, ``raft-small.pth``,
    ...; DataParallel's ``module.`` prefix or none) or torchvision's (``raft_large_C_T_SKHT_V2`` etc.),
    the layout and the size detected from the tensors; in evaluation mode."""
    path = Path(path)
    if not path.is_file():
        raise RAFTWeightsError(f"{path}: no such file; expected RAFT weights (raft-things.pth or torchvision's)")
    data = path.read_bytes()
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RAFTWeightsError(f"{path}: not a state dict of tensors; expected RAFT weights")
    try:
        state, layout, size = from_source(state)
    except RAFTWeightsError as error:
        raise RAFTWeightsError(f"{path}: {error}") from None
    model = RAFT(size)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RAFTWeightsError(f"{path}: RAFT-{size} weights ({layout}) do not fit: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
    return model.eval(), RAFTWeights(str(path), hashlib.sha256(data).hexdigest(), layout, size)
