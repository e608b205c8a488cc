"""CamVid: the layout DCFM reads, its label decoding, clear errors on bad layouts, mIoU over all classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vssbench.benchmark.metrics import ConfusionMatrix
from vssbench.cli import main
from vssbench.datasets.base import DatasetError, FrameStream
from vssbench.datasets.camvid import CAMVID_CLASSES, CamVidDataset
from vssbench.datasets.palettes import palette_for

# Label name -> frame name, as id2id.txt maps them in DCFM's layout (label names of SegNet's release,
# frame names numbered from the sequence's video).
LABELS = {"0016E5_07959": "0016E5_007959", "0016E5_07961": "0016E5_007961", "Seq05VD_f00000": "Seq05VD_000030"}


def write_camvid(root: Path, size: tuple[int, int] = (64, 96), id_map: bool = True) -> Path:
    """A CamVid-layout folder: test.txt, id2id.txt, gt/<label>_L.png ids, and frames n-1..n+1 of each label."""
    rng = np.random.default_rng(0)
    (root / "gt").mkdir(parents=True)
    for label, frame in LABELS.items():
        prefix, number = frame.split("_")
        for index in range(int(number) - 1, int(number) + 2):
            folder = root / label.split("_")[0]
            folder.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{prefix}_{index:06d}.png")
        ids = rng.integers(0, 13, size, dtype=np.uint8)  # 11 (void) and 12 occur: both ignored
        Image.fromarray(ids, mode="L").save(root / "gt" / f"{label}_L.png")
    (root / "test.txt").write_text("\n".join(LABELS) + "\n")
    if id_map:
        (root / "id2id.txt").write_text("".join(f"{label} {frame}\n" for label, frame in LABELS.items()))
    return root


def test_clips_hold_the_frame_before_and_after_each_label(tmp_path):
    dataset = CamVidDataset.from_root(write_camvid(tmp_path / "camvid"), "test")
    assert dataset.num_classes == 11 and dataset.class_names == CAMVID_CLASSES
    assert [v.name for v in dataset.videos] == list(LABELS)
    video = dataset.videos[0]
    assert [f.image.name for f in video.frames] == ["0016E5_007958.png", "0016E5_007959.png", "0016E5_007960.png"]
    assert [f.mask is not None for f in video.frames] == [False, True, False]
    assert dataset.videos[2].frames[1].image.parent.name == "Seq05VD"


def test_labels_keep_eleven_classes_and_ignore_void_and_above(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    dataset = CamVidDataset.from_root(root, "test")
    raw = np.asarray(Image.open(root / "gt" / "0016E5_07959_L.png"))
    label = dataset.load_label(root / "gt" / "0016E5_07959_L.png")
    assert (label[raw <= 10] == raw[raw <= 10]).all() and (label[raw >= 11] == 255).all()
    items = [FrameStream(dataset)[i] for i in range(3)]
    assert [item["label"].numel() > 0 for item in items] == [False, True, False]


def test_without_id2id_a_label_names_its_frame(tmp_path):
    root = tmp_path / "camvid"
    (root / "gt").mkdir(parents=True)
    (root / "0001TP").mkdir()
    for index in (6689, 6690, 6691):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "0001TP" / f"0001TP_{index:06d}.png")
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(root / "gt" / "0001TP_006690_L.png")
    (root / "val.txt").write_text("0001TP_006690\n")
    assert len(CamVidDataset.from_root(root, "val").videos[0].frames) == 3


@pytest.mark.parametrize("damage, named", [
    (lambda root: (root / "gt" / "0016E5_07959_L.png").unlink(), "0016E5_07959_L.png is missing"),
    (lambda root: (root / "0016E5" / "0016E5_007960.png").unlink(), "0016E5_007960.png is missing"),
    (lambda root: (root / "id2id.txt").write_text("0016E5_07959\n"), "id2id.txt, line 1"),
    (lambda root: (root / "test.txt").unlink(), "test.txt not found"),
    (lambda root: Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(root / "gt" / "0016E5_07959_L.png"),
     "single-channel"),
])
def test_bad_layouts_are_named(tmp_path, damage, named):
    root = write_camvid(tmp_path / "camvid")
    damage(root)
    with pytest.raises(DatasetError, match=named):
        dataset = CamVidDataset.from_root(root, "test")
        for video in dataset.videos:
            for frame in video.frames:
                if frame.mask is not None:
                    dataset.load_label(frame.mask)


def test_miou_all_counts_an_absent_class_as_zero():
    confusion = ConfusionMatrix(3, torch.device("cpu"))
    confusion.update(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 0]))  # class 2 nowhere
    # IoU: class 0 = 2/3, class 1 = 1/2, class 2: empty union
    assert confusion.miou("all") == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert confusion.miou("mmseg") == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_camvid_palette_is_its_own_colours():
    palette = palette_for("camvid")
    assert palette[0].tolist() == [128, 128, 128] and palette[3].tolist() == [128, 64, 128]
    assert palette[10].tolist() == [0, 128, 192] and palette[255].tolist() == [0, 0, 0]


def test_bench_run_reads_a_camvid_folder(tmp_path, capsys):
    root = write_camvid(tmp_path / "camvid")
    rows = tmp_path / "rows.jsonl"
    assert main(["-q", "run", "--methods", "perframe,copy", "--intervals", "2", "--dataset", "camvid", "--data-root",
                 str(root), "--split", "test", "--random-weights", "--output", str(rows), "--speed-rounds", "0"]) == 0
    row = json.loads(rows.read_text().splitlines()[0])
    assert row["dataset"] == "camvid" and row["metrics"]["miou_mode"] == "all"
    assert row["metrics"]["frames_evaluated"] == 3 and row["metrics"]["mvc8"] is None  # NaN, written as null
    assert set(row["metrics"]["per_class_iou"]) == set(CAMVID_CLASSES)
    (root / "gt" / "0016E5_07961_L.png").unlink()
    assert main(["run", "--methods", "copy", "--dataset", "camvid", "--data-root", str(root), "--split", "test",
                 "--random-weights", "--output", str(tmp_path / "other.jsonl")]) == 2
    assert "0016E5_07961_L.png is missing" in capsys.readouterr().err


def test_clip_length_is_a_dataset_setting(tmp_path):
    root = write_camvid(tmp_path / "camvid")
    alone = CamVidDataset.from_root(root, "test", frames_before=0, frames_after=0)
    assert [len(v.frames) for v in alone.videos] == [1, 1, 1]
    assert all(v.frames[0].mask is not None for v in alone.videos)
    with pytest.raises(DatasetError, match="0016E5_007957.png is missing"):
        CamVidDataset.from_root(root, "test", frames_before=2)
