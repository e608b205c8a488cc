"""TC, VSPW's temporal consistency (VSPW-dataset/VSPW_baseline ``TC_cal.py``), accumulated frame by frame.

For each pair of consecutive predicted frames (t, t+1) of a video: RAFT's flow from frame t to frame t+1
(the raw RGB frames, zero-padded to multiples of 8, 20 iterations), the prediction of t+1 warped back
onto frame t by that flow with nearest sampling, and one confusion matrix over all pairs with the
prediction of t as the "ground truth" and the warped one as the prediction. TC is the mean IoU over
the classes present in the predictions of t (``Evaluator.Mean_Intersection_over_Union``), in percent.
By default only the first 100 videos of the split count, as ``TC_cal.py`` scores ``list_[:100]`` of
``val.txt``; ``videos=None`` (``--tc-videos all``) scores every video.

Reproduced as the script computes it, quirks included (docs/metrics.md):

* the warp normalises pixel coordinates with W - 1 and H - 1 (the ``align_corners=True`` convention)
  but samples with ``align_corners=False``: each sample lands x W/(W-1) - 1/2 pixels from where the
  flow points, so even a zero flow shifts content by up to half a pixel at the borders, and the last
  column and row fall outside the frame for even sizes;
* what the flow carries outside the frame reads 0 (``grid_sample``'s zero padding): class 0 of the
  warped map, counted like any prediction of class 0.

Predictions are scored at the label's resolution (the runner's); a frame whose image has another size
is resized to it (bilinear) before the flow, since ``TC_cal.py`` takes frames and predictions of one size.

RAFT's four-level correlation pyramid needs frames of at least 128 pixels a side (padded): below that
its coarsest level is one pixel wide, where the lookup divides by W - 1 = 0 and every flow is NaN
(princeton-vl's code and this one alike; torchvision states a minimum size of 128 x 128). VSPW's 480p
frames are far above it. Smaller frames (the synthetic set's 64 x 96) are scaled up bilinearly, short
side to 128, for the flow alone, and the flow brought back to the frame's size and scale; the row says
so (``tc_flow_size``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vssbench.methods.raft import RAFT, RAFTWeightsError, flow_size, frame_flow, load_raft

TC_VIDEOS = 100  # TC_cal.py: for video in list_[:100]
TC_ITERATIONS = 20  # TC_cal.py: model_raft(image1, image2, iters=20, test_mode=True)

FlowFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (H, W, 3) uint8 frames -> (1, 2, H, W)


def warp_back(prediction: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``flowwarp`` of TC_cal.py: the (H, W) prediction of frame t+1 sampled (nearest) where the (1, 2, H, W)
    flow from frame t points, on frame t's grid; float32 as the script computes it, 0 outside."""
    height, width = prediction.shape
    flow = flow.to(torch.float32)
    xs = torch.arange(width, device=flow.device).view(1, -1).repeat(height, 1)
    ys = torch.arange(height, device=flow.device).view(-1, 1).repeat(1, width)
    grid = torch.stack([xs, ys]).float()[None] + flow
    grid = torch.stack([2.0 * grid[:, 0] / max(width - 1, 1) - 1.0, 2.0 * grid[:, 1] / max(height - 1, 1) - 1.0],
                       dim=-1)
    warped = F.grid_sample(prediction.to(flow.device, torch.float32)[None, None], grid, mode="nearest",
                           align_corners=False)
    return warped[0, 0].int().long()


def raft_flow(model: RAFT, iterations: int = TC_ITERATIONS, device: str | torch.device = "cpu") -> FlowFunction:
    """The flow TC_cal.py computes: RAFT on the raw frames padded with zeros to multiples of 8 (split evenly),
    ``iterations`` updates, the full-resolution flow unpadded (:func:`~vssbench.methods.raft.frame_flow`,
    which scales frames under 128 pixels a side up for the flow)."""
    model = model.to(device).eval()

    @torch.inference_mode()
    def flow(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        images = [frame.permute(2, 0, 1)[None].to(device).float() for frame in (first, second)]
        return frame_flow(model, *images, iters=iterations).float()

    return flow


@dataclass
class TCSettings:
    """``--metrics tc``: the flow network and how TC is scored, recorded in every row (``tc``)."""

    flow: RAFT
    weights: dict  # load_raft's record (file, sha256, layout, size), or {"random": True, "size": ...}
    iterations: int = TC_ITERATIONS
    videos: int | None = TC_VIDEOS

    @classmethod
    def build(cls, flow_path: Path | None, random_weights: bool, seed: int, iterations: int = TC_ITERATIONS,
              videos: int | None = TC_VIDEOS) -> "TCSettings":
        """RAFT read from ``flow_path`` (princeton-vl's or torchvision's weights), or with ``random_weights``
        a random RAFT-large drawn from ``seed`` without moving the global random state (rows mark it)."""
        if flow_path is not None:
            try:
                flow, weights = load_raft(flow_path)
            except RAFTWeightsError as error:
                raise RAFTWeightsError(f"--tc-flow {error}") from None
            return cls(flow, weights.as_record(), iterations, videos)
        if not random_weights:
            raise RAFTWeightsError("--metrics tc needs RAFT weights for its flow: --tc-flow PATH (princeton-vl's "
                                   "raft-things.pth or torchvision's raft_large/raft_small weights), or "
                                   "--random-weights to score TC with a random RAFT, which rows and reports mark")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            flow = RAFT("large").eval()
        return cls(flow, {"random": True, "size": "large", "seed": seed}, iterations, videos)

    @property
    def random(self) -> bool:
        return bool(self.weights.get("random"))

    def row_block(self) -> dict:
        return {"flow": self.weights, "iterations": self.iterations, "videos": "all" if self.videos is None else self.videos}


class TemporalConsistency:
    """TC's confusion matrix over the consecutive predicted frames of the first ``videos`` videos."""

    def __init__(self, num_classes: int, flow: FlowFunction, videos: int | None = TC_VIDEOS) -> None:
        self.num_classes = num_classes
        self.flow = flow
        self.videos = videos
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.pairs = 0
        self._previous: tuple[int, int, torch.Tensor, torch.Tensor] | None = None

    def counts(self, video: int) -> bool:
        """Whether the video at this index of the dataset is scored."""
        return self.videos is None or video < self.videos

    def update(self, image: torch.Tensor, prediction: torch.Tensor, video: int, frame: int) -> None:
        """Frame ``frame`` of the dataset's ``video``-th video: its (H, W, 3) uint8 RGB image and its (H, W)
        prediction; paired with the previous one when that was frame ``frame - 1`` of the same video."""
        if not self.counts(video):
            return
        if tuple(image.shape[:2]) != tuple(prediction.shape):
            image = F.interpolate(image.permute(2, 0, 1)[None].float(), size=tuple(prediction.shape),
                                  mode="bilinear", align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            image = image.permute(1, 2, 0)
        prediction = prediction.cpu()
        previous, self._previous = self._previous, (video, frame, image, prediction)
        if previous is None or previous[:2] != (video, frame - 1):
            return
        warped = warp_back(prediction, self.flow(previous[2], image)).cpu()
        self.add_pair(previous[3], warped)

    def add_pair(self, prediction: torch.Tensor, warped: torch.Tensor) -> None:
        """``Evaluator.add_batch(pred, warp_pred)``: the prediction of t as the rows, the warped one as the columns."""
        gt, pre = prediction.numpy().astype(np.int64), warped.numpy().astype(np.int64)
        valid = (gt >= 0) & (gt < self.num_classes)
        self.matrix += np.bincount(self.num_classes * gt[valid] + pre[valid],
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)
        self.pairs += 1

    def end_video(self) -> None:
        self._previous = None

    def value(self) -> float:
        """``Mean_Intersection_over_Union``: the IoU of each class present in the rows, averaged (a fraction);
        NaN without a pair."""
        if not self.pairs:
            return math.nan
        diagonal = np.diag(self.matrix).astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = diagonal / (self.matrix.sum(axis=1) + self.matrix.sum(axis=0) - diagonal)
        present = self.matrix.sum(axis=1) > 0
        return float(np.nansum(iou * present) / present.sum())

    def summary(self, settings: TCSettings, frame_size: tuple[int, int] | None) -> dict:
        """The row's TC entries: the value in percent (None without a pair), the pairs scored, and the protocol
        (flow weights, iterations, videos, the size RAFT saw the frames at)."""
        value = self.value()
        size = flow_size(*frame_size) if frame_size else None
        return {"tc": None if math.isnan(value) else round(100.0 * value, 4), "tc_pairs": self.pairs,
                "tc_protocol": {**settings.row_block(),
                                "flow_size": None if size is None else ("native" if size == frame_size
                                                                        else f"{size[0]}x{size[1]} (scaled up)")}}

    def state(self) -> dict:
        return {"matrix": self.matrix, "pairs": self.pairs}

    def merge(self, states: list[dict]) -> None:
        """Sum the matrices of disjoint shards of videos (the pairs never cross a video)."""
        self.matrix = sum(state["matrix"] for state in states)
        self.pairs = sum(state["pairs"] for state in states)
