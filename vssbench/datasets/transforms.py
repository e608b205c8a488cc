"""Image transforms shared by evaluation and training: resizing and ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) that fits (h, w) into ``scale`` = (short, long) keeping the aspect ratio.

    This is mmseg's ``Resize(keep_ratio=True)`` rule, used by the VSPW papers
    (MPVSS, TFC, CFFM) with scale (480, 853).
    """
    short, long = min(scale), max(scale)
    factor = min(long / max(height, width), short / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """The (H, W) whose shorter side is ``short``, the longer one scaled and truncated to an integer:
    torchvision's ``Resize(short)`` rule, with which DCFM's Cityscapes test resizes its frames."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a uint8 (H, W, 3) image to ``size`` = (H, W)."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))


def resize_label(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a (H, W) label map."""
    if label.shape == tuple(size):
        return label
    return np.asarray(Image.fromarray(label).resize((size[1], size[0]), Image.NEAREST))


def normalize_image(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 (3, H, W), normalised with the ImageNet statistics.

    NumPy only, no torch operation: a background loading thread can run it without competing
    for torch's intra-op thread pool with the method running in the main thread (measured on 2
    cores: a loader thread running torch ops made segformer-tiny steps 2.8x slower, NumPy and PIL
    work 1.15x).
    """
    # channels first while still uint8 (a quarter of the bytes to move), then to float;
    # (x / 255 - mean) / std as one subtraction and one multiplication in place
    array = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    array -= _PIXEL_MEAN
    array *= _PIXEL_SCALE
    return array


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) tensor, normalised with the ImageNet statistics."""
    return torch.from_numpy(normalize_image(image))


_PIXEL_MEAN = (np.float32(255.0) * np.asarray(IMAGENET_MEAN, dtype=np.float32)).reshape(3, 1, 1)
_PIXEL_SCALE = (np.float32(1.0) / (np.float32(255.0) * np.asarray(IMAGENET_STD, dtype=np.float32))).reshape(3, 1, 1)


# --------------------------------------------------------------------------- mmcv's bilinear resize, exactly

_COEF_SCALE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: fixed-point weights of 8-bit bilinear resizing


def _cv2_taps(source: int, target: int, clamp_weights: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenCV's first source index and the fixed-point weights of the two taps of each output position
    along one axis (``resizeGeneric``'s tables): the position computed in double and rounded to float,
    each weight rounded half to even. Along x a position before the first or past the last pixel gets
    weights (1, 0) at the border pixel; along y the weights stay and the rows are clamped (``clamp_weights``
    False)."""
    scale = 1.0 / (target / source)  # OpenCV: scale_x = 1. / inv_scale_x, inv_scale_x = dsize / ssize
    position = ((np.arange(target, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        fraction[first < 0] = 0
        first[first < 0] = 0
        past = first >= source - 1
        fraction[past] = 0
        first[past] = source - 1
    weights = np.stack([np.rint((np.float32(1) - fraction) * np.float32(_COEF_SCALE)),
                        np.rint(fraction * np.float32(_COEF_SCALE))]).astype(np.int64)
    second = np.minimum(first + 1, source - 1)
    first = np.clip(first, 0, source - 1)
    return torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(weights)


def resize_like_mmcv(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, *size): ``mmcv.imresize(..., interpolation='bilinear')``, i.e.
    OpenCV's ``INTER_LINEAR`` on 8-bit images, bit for bit: fixed-point weights (1 = 2048), the horizontal
    pass in integers, the vertical pass as OpenCV's vector loop computes it, ``((S0 >> 4) * b0 >> 16) +
    ((S1 >> 4) * b1 >> 16)`` rounded by ``(+ 2) >> 2``. The official VSPW pipelines of CFFM and MRCFA
    resize with it (``AlignedResize``, 480x853 -> 480x864). Equal to opencv-python 5.1.0 on every pixel of
    tests/golden/cv2_resize.pt (scripts/golden_cv2_resize.py: up, down and mixed sizes, rows whose length
    is not a multiple of 16). An OpenCV whose vertical pass ends each row with a scalar loop, ``(S0 * b0 +
    S1 * b1 + 2^21) >> 22``, can differ by one grey level in a row's last values where the rows are
    interpolated; with the height unchanged (VSPW's 480 rows) every form agrees."""
    if image.dtype != torch.uint8 or image.dim() != 4:
        raise ValueError(f"expected a uint8 (N, C, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    h, w = image.shape[2:]
    if (h, w) == tuple(size):
        return image.clone()
    x0, x1, alpha = _cv2_taps(w, size[1], clamp_weights=True)
    y0, y1, beta = _cv2_taps(h, size[0], clamp_weights=False)
    pixels = image.to(torch.int64)
    rows = pixels[..., x0] * alpha[0] + pixels[..., x1] * alpha[1]  # (N, C, H, W'): the horizontal pass
    top, bottom = rows[:, :, y0], rows[:, :, y1]  # (N, C, H', W')
    b0, b1 = beta[0].view(-1, 1), beta[1].view(-1, 1)
    result = (((top >> 4) * b0 >> 16) + ((bottom >> 4) * b1 >> 16) + 2) >> 2
    return result.clamp(0, 255).to(torch.uint8)


def to_pixels(frames: torch.Tensor) -> torch.Tensor:
    """Normalised (N, 3, H, W) frames -> the uint8 images they were made from (:func:`normalize_image`
    inverted and rounded, out-of-range values clamped): exact for frames a dataset loaded."""
    mean = torch.from_numpy(_PIXEL_MEAN).to(frames.device)
    scale = torch.from_numpy(_PIXEL_SCALE).to(frames.device)
    return (frames.float() / scale + mean).round().clamp(0, 255).to(torch.uint8)


def from_pixels(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalised frames, the same float32 operations as :func:`normalize_image`."""
    mean = torch.from_numpy(_PIXEL_MEAN).to(pixels.device)
    scale = torch.from_numpy(_PIXEL_SCALE).to(pixels.device)
    return ((pixels.float() - mean) * scale).to(dtype)
