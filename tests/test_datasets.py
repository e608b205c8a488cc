import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SMALL_SPEC
from vssbench.datasets.base import DatasetError, FrameStream
from vssbench.datasets.cityscapes import CityscapesDataset
from vssbench.datasets.synthetic import CLASS_NAMES, SyntheticSpec, generate, load_synthetic
from vssbench.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, keep_ratio_size
from vssbench.datasets.vspw import VSPWDataset


def _mask_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("data/*/mask/*.png"))}


def test_synthetic_is_deterministic_by_seed(tmp_path, small_synthetic):
    again = generate(tmp_path / "again", SMALL_SPEC, progress=False)
    assert _mask_bytes(again) == _mask_bytes(small_synthetic)
    other = generate(tmp_path / "other", SMALL_SPEC.__class__(**{**SMALL_SPEC.__dict__, "seed": 4}), progress=False)
    assert _mask_bytes(other) != _mask_bytes(small_synthetic)


def test_photometric_noise_changes_frames_not_labels(tmp_path, small_synthetic):
    noisy = generate(tmp_path / "noisy", replace(SMALL_SPEC, noise_std=12.0, brightness_jitter=0.15), progress=False)
    assert _mask_bytes(noisy) == _mask_bytes(small_synthetic)

    def frame_to_frame_change(root: Path) -> float:  # over the top rows, which are smooth sky
        frames = [np.asarray(Image.open(p), np.float32)[:4] for p in sorted(root.glob("data/val_0000/origin/*.jpg"))]
        return float(np.mean([np.abs(a - b).mean() for a, b in zip(frames[:-1], frames[1:])]))

    assert frame_to_frame_change(noisy) > 2 * frame_to_frame_change(small_synthetic)
    # The default dataset's name (and so every cached checkpoint and committed baseline) is unchanged
    # by the noise fields; changing them names a different dataset.
    assert SyntheticSpec().fingerprint == "42c3ce14e46f"
    assert SyntheticSpec(noise_std=12.0).fingerprint != SyntheticSpec().fingerprint


def test_synthetic_layout_and_content(small_synthetic):
    dataset = load_synthetic(small_synthetic, "val")
    assert dataset.num_classes == len(CLASS_NAMES) and len(dataset.videos) == 2
    assert all(len(v.frames) == 20 for v in dataset.videos)
    labels = np.stack([dataset.load_label(f.mask) for v in dataset.videos for f in v.frames])
    present = set(np.unique(labels).tolist())
    assert present <= set(range(len(CLASS_NAMES))) | {255}
    assert len(present - {255}) >= 4  # background and moving object classes appear
    # Objects and the camera move: consecutive label maps differ, and more so far apart.
    near = np.mean(labels[0] != labels[1])
    far = np.mean(labels[0] != labels[10])
    assert 0 < near < far


def test_frame_stream_items(small_synthetic):
    dataset = load_synthetic(small_synthetic, "val")
    stream = FrameStream(dataset)
    assert len(stream) == 40
    first, last = stream[0], stream[19]
    assert first["is_first"] and not first["is_last"] and last["is_last"]
    assert first["image"].shape == (3, 64, 96) and first["label"].shape == (64, 96)


def test_vspw_label_shift(vspw_copy, tmp_path, small_synthetic):
    root = vspw_copy
    mask = root / "data" / "val_0000" / "mask" / "00000000.png"
    Image.fromarray(np.array([[0, 1, 2], [124, 255, 3]], np.uint8)).save(mask)
    dataset = VSPWDataset.from_root(root, "val")
    assert dataset.num_classes == 124
    assert dataset.load_label(mask).tolist() == [[255, 0, 1], [123, 255, 2]]


def test_keep_ratio_resize_matches_mmseg_rule():
    assert keep_ratio_size(480, 853, (480, 853)) == (480, 853)
    assert keep_ratio_size(720, 1280, (480, 853)) == (480, 853)
    assert keep_ratio_size(1080, 1440, (480, 853)) == (480, 640)


@pytest.mark.parametrize(
    "break_it,message",
    [
        (lambda r: (r / "data/val_0001/mask/00000005.png").unlink(), "00000005.jpg has no mask"),
        (lambda r: shutil.rmtree(r / "data/val_0001"), "listed but"),
        (lambda r: (r / "val.txt").write_text(""), "is empty"),
        (lambda r: (r / "val.txt").unlink(), "val.txt not found"),
    ],
)
def test_vspw_structure_errors_name_the_path(vspw_copy, tmp_path, small_synthetic, break_it, message):
    root = vspw_copy
    break_it(root)
    with pytest.raises(DatasetError, match=message):
        VSPWDataset.from_root(root, "val", num_classes=8)


def test_missing_root_is_named(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "nope")):
        VSPWDataset.from_root(tmp_path / "nope")


def test_out_of_range_label_and_corrupt_frame_name_the_file(vspw_copy, tmp_path, small_synthetic):
    root = vspw_copy
    mask = root / "data/val_0000/mask/00000003.png"
    Image.fromarray(np.full((64, 96), 42, np.uint8)).save(mask)
    frame = root / "data/val_0001/origin/00000004.jpg"
    frame.write_bytes(b"not a jpeg")
    dataset = VSPWDataset.from_root(root, "val", num_classes=8, keep_ratio_scale=None)
    stream = FrameStream(dataset)
    with pytest.raises(DatasetError, match=r"00000003.png has values \[42\] outside the label set"):
        stream[3]
    with pytest.raises(DatasetError, match="cannot read image .*00000004.jpg"):
        stream[20 + 4]


def test_mask_of_other_size_is_rejected(vspw_copy, tmp_path, small_synthetic):
    root = vspw_copy
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "data/val_0000/mask/00000001.png")
    stream = FrameStream(VSPWDataset.from_root(root, "val", num_classes=8, keep_ratio_scale=None))
    with pytest.raises(DatasetError, match="00000001.png is 10x10 but its frame"):
        stream[1]


def test_cityscapes_snippets(tmp_path):
    sequence = tmp_path / "leftImg8bit_sequence/val/aachen"
    labels = tmp_path / "gtFine/val/aachen"
    sequence.mkdir(parents=True)
    labels.mkdir(parents=True)
    for frame in range(0, 30):
        Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(sequence / f"aachen_000001_{frame:06d}_leftImg8bit.png")
    raw = np.array([[7, 26, 0, 33]] * 8, np.uint8).repeat(4, 1)
    Image.fromarray(raw).save(labels / "aachen_000001_000019_gtFine_labelIds.png")
    dataset = CityscapesDataset.from_root(tmp_path, "val")
    (video,) = dataset.videos
    assert len(video.frames) == 30 and video.num_labelled == 1
    assert video.frames[19].mask is not None
    assert dataset.load_label(video.frames[19].mask)[0, ::4].tolist() == [0, 13, 255, 18]
    (sequence / "aachen_000001_000029_leftImg8bit.png").unlink()
    with pytest.raises(DatasetError, match="frame 000029 is missing"):
        CityscapesDataset.from_root(tmp_path, "val")


@pytest.mark.parametrize("layout", ["contiguous", "read-only", "flipped"])
def test_image_to_tensor_normalises_any_array_layout(layout):
    image = np.random.default_rng(0).integers(0, 256, (6, 9, 3), dtype=np.uint8)
    if layout == "read-only":
        image.flags.writeable = False
    elif layout == "flipped":  # training's horizontal flip: a negatively strided view
        image = image[:, ::-1]
    expected = (torch.tensor(image.copy(), dtype=torch.float64).permute(2, 0, 1) / 255
                - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(3, 1, 1)) \
        / torch.tensor(IMAGENET_STD, dtype=torch.float64).view(3, 1, 1)
    torch.testing.assert_close(image_to_tensor(image), expected.float())


GOLDEN = Path(__file__).parent / "golden"


def test_resize_like_mmcv_equals_opencv_on_every_pixel():
    """tests/golden/cv2_resize.pt: OpenCV's INTER_LINEAR on 8-bit images (scripts/golden_cv2_resize.py),
    VSPW's 853 -> 864 columns among the cases."""
    from vssbench.datasets.transforms import resize_like_mmcv

    golden = torch.load(GOLDEN / "cv2_resize.pt", weights_only=True)
    assert len(golden["cases"]) == 14
    for case in golden["cases"]:
        image = case["image"].permute(2, 0, 1)[None].contiguous()
        ours = resize_like_mmcv(image, tuple(case["size"]))[0].permute(1, 2, 0)
        assert torch.equal(ours, case["resized"]), (tuple(case["image"].shape), case["size"])
    # not a resize that merely happens to round alike: the float bilinear resize misses pixels
    case = golden["cases"][4]  # (17, 29) -> (40, 37), random
    image = case["image"].permute(2, 0, 1)[None].double()
    floating = torch.nn.functional.interpolate(image, size=tuple(case["size"]), mode="bilinear", align_corners=False)
    assert not torch.equal(floating.round().to(torch.uint8)[0].permute(1, 2, 0), case["resized"])


def test_pixels_round_trip_through_normalisation():
    from vssbench.datasets.transforms import from_pixels, to_pixels

    image = np.random.default_rng(3).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    frame = image_to_tensor(image)[None]
    assert np.array_equal(to_pixels(frame)[0].permute(1, 2, 0).numpy(), image)
    assert torch.equal(from_pixels(to_pixels(frame)), frame)
