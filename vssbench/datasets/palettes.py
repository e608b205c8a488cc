"""Label colours per dataset, as each dataset's own tools draw them.

A palette is a (256, 3) uint8 array indexed by train id (0..C-1), with 255 (ignore) included, so
that ``palette[labels]`` colours a label map in one step:

* ``vspw``: the palette VSPW's official baseline (``VSPW-dataset/VSPW_baseline``, ``test.py``,
  ``_palette``) puts on the prediction PNGs it saves. Those PNGs hold train ids (the mask value minus
  one, "others" dropped), so the palette is indexed as vssbench's predictions are. Its first 22
  entries are a PASCAL-VOC-like colour table (with 191 where VOC has 192); from index 22 on every
  entry is the grey (i, i, i). Most of VSPW's 124 classes are therefore greys: that is the official
  look, kept rather than improved so that figures match the dataset's own.
* ``cityscapes``: the 19 train-id colours of ``cityscapesscripts.helpers.labels``; ignore is black,
  the colour of "unlabeled" there.
* ``camvid``: the colours of the original CamVid labels for the 11 classes (pavement is its
  "Sidewalk"); ignore is black, CamVid's "Void".
* ``synthetic`` (and its variants ``synthetic-<fingerprint>``): one colour per class of
  :data:`~vssbench.datasets.synthetic.CLASS_NAMES`, chosen to look like the Cityscapes colour of the
  nearest class (sky, vegetation, road, person, vehicle, sign) and distinct hues for water and
  animal; ignore ("others" and void) is black.

Any other dataset gets the bit-interleaved PASCAL VOC colour map, which gives every id up to 255 a
distinct colour.
"""

from __future__ import annotations

import numpy as np

# VSPW_baseline test.py `_palette`, entries 0..21; entries 22..255 are (i, i, i).
_VSPW_HEAD = (
    (0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128), (128, 0, 128), (0, 128, 128),
    (128, 128, 128), (64, 0, 0), (191, 0, 0), (64, 128, 0), (191, 128, 0), (64, 0, 128), (191, 0, 128),
    (64, 128, 128), (191, 128, 128), (0, 64, 0), (128, 64, 0), (0, 191, 0), (128, 191, 0), (0, 64, 128),
    (128, 64, 128),
)
# cityscapesscripts labels.py, train ids 0..18 (road .. bicycle).
_CITYSCAPES = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)
# CamVid's own colours of the 11 classes (sky .. bicyclist; pavement is its "Sidewalk").
_CAMVID = (
    (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (0, 0, 192), (128, 128, 0), (192, 128, 128),
    (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
)
# synthetic CLASS_NAMES: sky, vegetation, road, water, vehicle, person, animal, sign.
_SYNTHETIC = (
    (70, 130, 180), (107, 142, 35), (128, 64, 128), (0, 170, 200), (0, 0, 142), (220, 20, 60),
    (255, 140, 0), (220, 220, 0),
)
IGNORE_INDEX = 255


def _table(head: tuple[tuple[int, int, int], ...], ignore: tuple[int, int, int]) -> np.ndarray:
    """``head`` for the first ids, the VOC map for the rest (never reached by a valid label), ``ignore`` at 255."""
    table = voc_palette()
    table[: len(head)] = head
    table[IGNORE_INDEX] = ignore
    return table


def voc_palette() -> np.ndarray:
    """The PASCAL VOC colour map: the bits of the id spread over the high bits of R, G and B."""
    ids = np.arange(256)
    table = np.zeros((256, 3), dtype=np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (ids >> (3 * shift + channel)) & 1
            table[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
    return table


def vspw_palette() -> np.ndarray:
    table = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    table[: len(_VSPW_HEAD)] = _VSPW_HEAD
    return table


def palette_for(dataset_name: str) -> np.ndarray:
    """The (256, 3) uint8 palette of the dataset named (a row's ``dataset`` field)."""
    if dataset_name == "vspw":
        return vspw_palette()
    if dataset_name == "cityscapes":
        return _table(_CITYSCAPES, (0, 0, 0))
    if dataset_name == "camvid":
        return _table(_CAMVID, (0, 0, 0))
    if dataset_name == "synthetic" or dataset_name.startswith("synthetic-"):
        return _table(_SYNTHETIC, (0, 0, 0))
    return voc_palette()
