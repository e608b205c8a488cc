"""Training augmentation with mmsegmentation's semantics, on NumPy and PIL (no mmcv, no OpenCV).

A pipeline is a list of steps as a recipe writes them (:mod:`vssbench.recipes`), each a dict with a
``type``; :func:`augment` applies them to the frames of one training sample (one frame, a (key,
current) pair or a clip) and returns normalised image tensors and label maps. Every random draw is
made once per sample and transforms every frame of it alike, since these methods relate frames
geometrically (flow, correlation, attention across frames) and photometrically (FlowNetS's
brightness constancy): CFFM's clip pipeline draws its photometric distortion per frame instead,
which vssbench does not follow.

Steps (defaults are mmseg's):

* ``resize``: to ``size`` (H, W), by default the dataset's input size (the synthetic recipes).
* ``random_resize``: mmseg's ``Resize(img_scale=scale, ratio_range, keep_ratio=True)``: the scale
  (long, short) times a ratio drawn uniformly from ``ratio_range``, the frame rescaled to fit it
  keeping its aspect ratio (``keep_ratio_size``); bilinear for images, nearest for labels.
* ``resize_shortest_edge``: detectron2's ``ResizeShortestEdge(sample_style="choice")``, which
  Mask2Former's and MPVSS's configs use: the short side set to one of ``short_edge`` (drawn
  uniformly), the long side capped at ``max_size``.
* ``random_crop``: mmseg's ``RandomCrop``: a ``size`` (H, W) window at a uniform offset; with
  ``cat_max_ratio`` < 1, up to 10 windows are drawn until no class covers that share or more of the
  window's labelled pixels of the sample's last frame (the frame the loss is on; CFFM's
  ``RandomCrop_clips`` does the same), else the tenth is kept. A frame smaller than the window is
  cropped to itself and padded afterwards (``pad``).
* ``flip``: horizontal, with probability ``prob``.
* ``photometric_distortion``: mmseg's ``PhotoMetricDistortion``: brightness (+-32, p = 0.5),
  contrast (x 0.5-1.5, p = 0.5) before or after (p = 0.5 each) saturation (x 0.5-1.5, p = 0.5)
  and hue (+-18 in OpenCV's 0-180 hue units, p = 0.5) in HSV, each clipped to 0..255 and truncated
  to uint8 as mmseg's ``convert`` does. Labels are never touched.
* ``pad``: to ``size`` (H, W) at the bottom and right, images with 0 after normalisation (the
  mean colour), labels with 255 (ignored), as mmseg's ``Pad(pad_val=0, seg_pad_val=255)`` after
  ``Normalize``.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vssbench.datasets.base import IGNORE_INDEX
from vssbench.datasets.transforms import keep_ratio_size, normalize_image

STEPS = ("resize", "random_resize", "resize_shortest_edge", "random_crop", "flip", "photometric_distortion", "pad")
CROP_ATTEMPTS = 10  # mmseg's RandomCrop


class AugmentationError(ValueError):
    """A pipeline step that is unknown, or that cannot apply to the data as configured."""


def check_pipeline(steps: list[dict]) -> None:
    """Every step known and with the parameters it needs; raises AugmentationError naming the step."""
    required = {"random_resize": ("scale", "ratio_range"),
                "resize_shortest_edge": ("short_edge", "max_size"), "random_crop": ("size",), "pad": ("size",)}
    for index, step in enumerate(steps):
        kind = step.get("type")
        if kind not in STEPS:
            raise AugmentationError(f"augmentation step {index + 1} {step!r}: unknown type; expected one of "
                                    f"{', '.join(STEPS)}")
        missing = [name for name in required.get(kind, ()) if name not in step]
        if missing:
            raise AugmentationError(f"augmentation step {index + 1} ({kind}) lacks {', '.join(missing)}")


def augment(images: list[np.ndarray], labels: list[np.ndarray], steps: list[dict],
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB frames (H, W, 3) and label maps (H, W) of one sample -> normalised (T, 3, H', W') and
    int64 (T, H', W'), every frame transformed by the same draws."""
    pad_size = next((tuple(step["size"]) for step in steps if step["type"] == "pad"), None)
    for step in steps:
        kind = step["type"]
        if kind == "resize":
            images, labels = _resize(images, labels, tuple(step["size"]))
        elif kind == "random_resize":
            low, high = step["ratio_range"]
            ratio = rng.uniform(low, high)
            scale = (int(step["scale"][0] * ratio), int(step["scale"][1] * ratio))
            images, labels = _resize(images, labels, keep_ratio_size(*images[0].shape[:2], scale))
        elif kind == "resize_shortest_edge":
            short = int(rng.choice(step["short_edge"]))
            images, labels = _resize(images, labels, _shortest_edge_size(*images[0].shape[:2], short,
                                                                         step["max_size"]))
        elif kind == "random_crop":
            images, labels = _random_crop(images, labels, tuple(step["size"]), step.get("cat_max_ratio", 1.0), rng,
                                          padded=pad_size is not None)
        elif kind == "flip":
            prob = step.get("prob", 0.5)  # a fair coin drawn as vssbench's synthetic sampler always drew it
            if (rng.integers(2) == 1) if prob == 0.5 else (rng.random() < prob):
                images, labels = [i[:, ::-1] for i in images], [label[:, ::-1] for label in labels]
        elif kind == "photometric_distortion":
            images = _photometric_distortion(images, rng, step)
    tensors = [torch.from_numpy(normalize_image(np.ascontiguousarray(image))) for image in images]
    targets = [torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)) for label in labels]
    if pad_size is not None:
        tensors = [_pad(t, pad_size, 0.0) for t in tensors]
        targets = [_pad(t, pad_size, IGNORE_INDEX) for t in targets]
    return torch.stack(tensors), torch.stack(targets)


def _resize(images: list[np.ndarray], labels: list[np.ndarray],
            size: tuple[int, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if images[0].shape[:2] == size:
        return images, labels
    target = (size[1], size[0])
    return ([np.asarray(Image.fromarray(i).resize(target, Image.BILINEAR)) for i in images],
            [np.asarray(Image.fromarray(label).resize(target, Image.NEAREST)) for label in labels])


def _shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge.get_output_shape."""
    scale = short / min(height, width)
    new_h, new_w = (short, scale * width) if height < width else (scale * height, short)
    if max(new_h, new_w) > max_size:
        factor = max_size / max(new_h, new_w)
        new_h, new_w = new_h * factor, new_w * factor
    return int(new_h + 0.5), int(new_w + 0.5)


def _random_crop(images: list[np.ndarray], labels: list[np.ndarray], size: tuple[int, int], cat_max_ratio: float,
                 rng: np.random.Generator, padded: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    height, width = images[0].shape[:2]
    if not padded and (height < size[0] or width < size[1]):
        raise AugmentationError(f"a {size[0]}x{size[1]} crop of a {height}x{width} frame needs padding, and the "
                                "pipeline has no pad step; add one or choose a smaller --crop")

    def window() -> tuple[int, int]:
        return int(rng.integers(max(height - size[0], 0) + 1)), int(rng.integers(max(width - size[1], 0) + 1))

    top, left = window()
    if cat_max_ratio < 1.0:
        for _ in range(CROP_ATTEMPTS):
            crop = labels[-1][top: top + size[0], left: left + size[1]]
            classes, counts = np.unique(crop, return_counts=True)
            counts = counts[classes != IGNORE_INDEX]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            top, left = window()
    return ([i[top: top + size[0], left: left + size[1]] for i in images],
            [label[top: top + size[0], left: left + size[1]] for label in labels])


def _pad(tensor: torch.Tensor, size: tuple[int, int], value: float) -> torch.Tensor:
    height, width = tensor.shape[-2:]
    if height > size[0] or width > size[1]:
        return tensor
    return torch.nn.functional.pad(tensor, (0, size[1] - width, 0, size[0] - height), value=value)


def _convert(channel: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's PhotoMetricDistortion.convert: scale and shift, clip to 0..255, truncate to uint8."""
    return np.clip(channel.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def _photometric_distortion(images: list[np.ndarray], rng: np.random.Generator, step: dict) -> list[np.ndarray]:
    brightness = step.get("brightness_delta", 32)
    contrast = step.get("contrast_range", (0.5, 1.5))
    saturation = step.get("saturation_range", (0.5, 1.5))
    hue = step.get("hue_delta", 18)
    # The draws, in mmseg's order; each applies with probability 0.5.
    beta = rng.uniform(-brightness, brightness) if rng.integers(2) else None
    contrast_first = bool(rng.integers(2) == 0)
    alpha = rng.uniform(*contrast) if rng.integers(2) else None
    saturation_alpha = rng.uniform(*saturation) if rng.integers(2) else None
    hue_shift = int(rng.integers(-hue, hue + 1)) if rng.integers(2) else None
    out = []
    for image in images:
        if beta is not None:
            image = _convert(image, beta=beta)
        if alpha is not None and contrast_first:
            image = _convert(image, alpha=alpha)
        if saturation_alpha is not None or hue_shift is not None:
            hsv = rgb_to_hsv(image)
            if saturation_alpha is not None:
                hsv[..., 1] = _convert(hsv[..., 1], alpha=saturation_alpha)
            if hue_shift is not None:
                hsv[..., 0] = (hsv[..., 0].astype(np.int64) + hue_shift) % 180
            image = hsv_to_rgb(hsv)
        if alpha is not None and not contrast_first:
            image = _convert(image, alpha=alpha)
        out.append(image)
    return out


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 HSV in OpenCV's ranges (H in 0..179 = degrees / 2, S and V in 0..255)."""
    rgb = image.astype(np.float32)
    value = rgb.max(-1)
    spread = value - rgb.min(-1)
    saturation = np.where(value > 0, 255.0 * spread / np.maximum(value, 1e-6), 0.0)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(spread, 1e-6)
    hue = np.where(value == red, 60.0 * (green - blue) / safe,
                   np.where(value == green, 120.0 + 60.0 * (blue - red) / safe, 240.0 + 60.0 * (red - green) / safe))
    hue = np.where(spread > 0, np.mod(hue, 360.0), 0.0)
    return np.stack([np.round(hue / 2.0) % 180, np.round(saturation), value], -1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of :func:`rgb_to_hsv`."""
    hue = hsv[..., 0].astype(np.float32) * 2.0
    saturation = hsv[..., 1].astype(np.float32) / 255.0
    value = hsv[..., 2].astype(np.float32)
    chroma = value * saturation
    sector = hue / 60.0
    second = chroma * (1 - np.abs(np.mod(sector, 2) - 1))
    zeros = np.zeros_like(hue)
    index = np.floor(sector).astype(np.int64) % 6
    red = np.choose(index, [chroma, second, zeros, zeros, second, chroma])
    green = np.choose(index, [second, chroma, chroma, second, zeros, zeros])
    blue = np.choose(index, [zeros, zeros, second, chroma, chroma, second])
    rgb = np.stack([red, green, blue], -1) + (value - chroma)[..., None]
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
