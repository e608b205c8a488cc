"""Make tests/golden/cv2_resize.pt: OpenCV's 8-bit bilinear resize (what ``mmcv.imresize`` runs for
CFFM's and MRCFA's ``AlignedResize``) on fixed images, for ``vssbench.datasets.transforms.resize_like_mmcv``.

    python scripts/golden_cv2_resize.py tests/golden

Run where ``opencv-python`` (or its headless build) installs, never in vssbench's environment (OpenCV is
not a dependency). Each case: a seeded uint8 image (H, W, 3), random or smooth, its target size and
``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)``; the sizes cover VSPW's 853 -> 864
columns, up, down and mixed scales, and rows whose length (width x 3) is not a multiple of 16.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

CASES = [((16, 853), (16, 864)), ((30, 53), (32, 64)), ((17, 29), (40, 37)), ((50, 41), (23, 19)),
         ((7, 5), (13, 11)), ((33, 70), (64, 75)), ((100, 3), (37, 150))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write cv2_resize.pt")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    cases = []
    for source, target in CASES:
        for kind in ("random", "smooth"):
            if kind == "random":
                image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
            else:
                image = np.clip(np.cumsum(rng.integers(-3, 4, (*source, 3)), 1) + 128, 0, 255).astype(np.uint8)
            resized = cv2.resize(image, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
            cases.append({"image": torch.from_numpy(image), "size": list(target), "resized": torch.from_numpy(resized)})
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save({"opencv": cv2.__version__, "cases": cases}, args.out / "cv2_resize.pt")
    print(f"{len(cases)} cases, OpenCV {cv2.__version__}")


if __name__ == "__main__":
    main()
