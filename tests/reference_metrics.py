"""Straightforward NumPy implementations of the metrics, written independently of vssbench.

They work on whole videos held in memory, as the VSPW and mmseg evaluation scripts do,
and serve as the reference the streaming accumulators are checked against.
"""

from __future__ import annotations

import numpy as np


def confusion(predictions: list[np.ndarray], targets: list[np.ndarray], num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for prediction, target in zip(predictions, targets):
        valid = target != 255
        matrix += np.bincount(num_classes * target[valid].astype(np.int64) + prediction[valid],
                              minlength=num_classes**2).reshape(num_classes, num_classes)
    return matrix


def miou_and_wiou(matrix: np.ndarray, mode: str) -> tuple[float, float, np.ndarray]:
    tp = np.diag(matrix).astype(float)
    gt, pred = matrix.sum(1).astype(float), matrix.sum(0).astype(float)
    union = gt + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    keep = gt > 0 if mode == "vspw" else union > 0
    miou = float(np.mean(iou[keep]))
    wiou = float(np.sum((gt / gt.sum()) * np.nan_to_num(iou)))
    return miou, wiou, iou


def vc_vspw(videos: list[tuple[list[np.ndarray], list[np.ndarray]]], n: int) -> float:
    """VSPW's VC_perclip.py: windows i in range(N - n), skip videos with N <= 16, pooled nanmean."""
    scores = []
    for targets, predictions in videos:
        if len(targets) <= 16:
            continue
        for i in range(len(targets) - n):
            common_t = np.ones(targets[0].shape, bool)
            common_p = np.ones(targets[0].shape, bool)
            for j in range(1, n):
                common_t &= targets[i] == targets[i + j]
                common_p &= predictions[i] == predictions[i + j]
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append((common_t & common_p).sum() / common_t.sum())
    return float(np.nanmean(scores)) if scores else float("nan")


def vc_paper(videos: list[tuple[list[np.ndarray], list[np.ndarray]]], n: int) -> float:
    """The printed formula: N - n + 1 windows per video, per-video mean, then mean over videos."""
    per_video = []
    for targets, predictions in videos:
        scores = []
        for i in range(len(targets) - n + 1):
            window_t, window_p = np.stack(targets[i:i + n]), np.stack(predictions[i:i + n])
            stable_t = (window_t == window_t[0]).all(0)
            stable_p = (window_p == window_p[0]).all(0)
            if stable_t.sum():
                scores.append((stable_t & stable_p).sum() / stable_t.sum())
        if scores:
            per_video.append(np.mean(scores))
    return float(np.mean(per_video)) if per_video else float("nan")
