"""A transcription of VSPW-dataset/VSPW_baseline's ``TC_cal.py`` (``flowwarp`` and the ``Evaluator`` of its
``utils.py``), its loop over the frames of each video with the flows given instead of computed by RAFT:
the reference vssbench's TC accumulator is checked against. Written from the script, not from vssbench."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def flowwarp(x: torch.Tensor, flo: torch.Tensor) -> torch.Tensor:
    """TC_cal.py's flowwarp: x [B, C, H, W] (the next frame's prediction), flo [B, 2, H, W]."""
    B, C, H, W = x.size()
    xx = torch.arange(0, W).view(1, -1).repeat(H, 1)
    yy = torch.arange(0, H).view(-1, 1).repeat(1, W)
    xx = xx.view(1, 1, H, W).repeat(B, 1, 1, 1)
    yy = yy.view(1, 1, H, W).repeat(B, 1, 1, 1)
    grid = torch.cat((xx, yy), 1).float()
    vgrid = grid + flo
    vgrid[:, 0, :, :] = 2.0 * vgrid[:, 0, :, :].clone() / max(W - 1, 1) - 1.0
    vgrid[:, 1, :, :] = 2.0 * vgrid[:, 1, :, :].clone() / max(H - 1, 1) - 1.0
    vgrid = vgrid.permute(0, 2, 3, 1)
    return nn.functional.grid_sample(x, vgrid, mode="nearest", align_corners=False)


class Evaluator:
    """utils.py's Evaluator, the two methods TC_cal.py calls."""

    def __init__(self, num_class: int) -> None:
        self.num_class = num_class
        self.confusion_matrix = np.zeros((num_class,) * 2)

    def add_batch(self, gt_image: np.ndarray, pre_image: np.ndarray) -> None:
        assert gt_image.shape == pre_image.shape
        mask = (gt_image >= 0) & (gt_image < self.num_class)
        label = self.num_class * gt_image[mask].astype("int") + pre_image[mask]
        count = np.bincount(label, minlength=self.num_class ** 2)
        self.confusion_matrix += count.reshape(self.num_class, self.num_class)

    def Mean_Intersection_over_Union(self) -> float:  # noqa: N802 - the script's name
        with np.errstate(divide="ignore", invalid="ignore"):
            MIoU = np.diag(self.confusion_matrix) / (  # noqa: N806
                np.sum(self.confusion_matrix, axis=1) + np.sum(self.confusion_matrix, axis=0)
                - np.diag(self.confusion_matrix))
        isval = np.sum(self.confusion_matrix, axis=1) > 0
        return float(np.nansum(MIoU * isval) / isval.sum())


def tc(videos: list[list[np.ndarray]], flows: list[list[torch.Tensor]], num_class: int, first: int = 100) -> float:
    """TC_cal.py's loop: ``videos[v][i]`` the (H, W) prediction of frame i, ``flows[v][i]`` the [1, 2, H, W]
    flow from frame i to frame i + 1 (what RAFT gives the script); the first ``first`` videos."""
    evaluator = Evaluator(num_class)
    for video, video_flows in list(zip(videos, flows))[:first]:
        for i in range(len(video) - 1):
            pred, next_pred = torch.from_numpy(video[i]), torch.from_numpy(video[i + 1])
            next_pred = next_pred.unsqueeze(0).unsqueeze(0).float()
            warp_pred = flowwarp(next_pred, video_flows[i])
            warp_pred = warp_pred.int().squeeze(1).numpy()
            pred = pred.unsqueeze(0).numpy()
            evaluator.add_batch(pred, warp_pred)
    return evaluator.Mean_Intersection_over_Union()
