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


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W), normalised with the ImageNet statistics."""
    # channels first while still uint8 (a quarter of the bytes to move), then to float
    # (np.require copies only arrays torch cannot wrap: read-only or negatively strided, e.g. flipped)
    tensor = torch.from_numpy(np.require(image, requirements=("C", "W"))).permute(2, 0, 1).contiguous().float()
    # (x / 255 - mean) / std, as one subtraction and one multiplication in place
    return tensor.sub_(_PIXEL_MEAN).mul_(_PIXEL_SCALE)


_PIXEL_MEAN = 255.0 * torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_PIXEL_SCALE = 1.0 / (255.0 * torch.tensor(IMAGENET_STD).view(3, 1, 1))
