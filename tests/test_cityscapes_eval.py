"""Cityscapes scoring against cityscapesscripts itself (the official evaluation, installed from the
package registry as a dev dependency): generated ``labelIds`` ground truth and predictions, scored
by ``evalPixelLevelSemanticLabeling.evaluateImgLists`` and by vssbench's dataset loader plus
metrics in the dataset's default mIoU mode. A sparse-class case (a class predicted that the labels
lack, where VSPW's averaging differs by tens of points) and an all-class case with ignored pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vssbench.benchmark.metrics import SegmentationMetrics
from vssbench.cli import main
from vssbench.datasets.cityscapes import _LABEL_ID_TO_TRAIN_ID, CITYSCAPES_CLASSES, CityscapesDataset

evaluation = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

TRAIN_ID_TO_LABEL_ID = np.zeros(256, np.uint8)
for label_id, train_id in _LABEL_ID_TO_TRAIN_ID.items():
    TRAIN_ID_TO_LABEL_ID[train_id] = label_id
HEIGHT, WIDTH = 64, 128


def _snippet_root(root: Path, labels: list[np.ndarray]) -> Path:
    """A Cityscapes layout with one 30-frame snippet per label map (labelIds, frame 19 labelled)."""
    for index, label in enumerate(labels):
        sequence, gt = root / "leftImg8bit_sequence/val/aachen", root / "gtFine/val/aachen"
        sequence.mkdir(parents=True, exist_ok=True)
        gt.mkdir(parents=True, exist_ok=True)
        for frame in range(30):
            Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 * index, np.uint8)).save(
                sequence / f"aachen_{index:06d}_{frame:06d}_leftImg8bit.png")
        Image.fromarray(label).save(gt / f"aachen_{index:06d}_000019_gtFine_labelIds.png")
    return root


def _official(label_files: list[Path], predictions: list[np.ndarray], folder: Path) -> dict:
    """cityscapesscripts' result for predictions in train ids, written as labelIds images."""
    folder.mkdir()
    prediction_files = []
    for index, prediction in enumerate(predictions):
        prediction_files.append(str(folder / f"prediction_{index}.png"))
        Image.fromarray(TRAIN_ID_TO_LABEL_ID[prediction]).save(prediction_files[-1])
    args = evaluation.args
    args.evalInstLevelScore, args.quiet, args.JSONOutput = False, True, False
    return evaluation.evaluateImgLists(prediction_files, [str(f) for f in label_files], args)


def _ours(dataset: CityscapesDataset, predictions: list[np.ndarray], mode: str) -> dict:
    metrics = SegmentationMetrics(dataset.num_classes, miou_mode=mode)
    for video, prediction in zip(dataset.videos, predictions):
        (labelled,) = [frame for frame in video.frames if frame.mask is not None]
        metrics.update(torch.from_numpy(prediction).long(), torch.from_numpy(dataset.load_label(labelled.mask)).long())
        metrics.end_video()
    return metrics.summary(dataset.class_names)


def _cases() -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(0)
    sparse_label = np.full((HEIGHT, WIDTH), 7, np.uint8)  # road ...
    sparse_label[:, 80:] = 26  # ... and car
    sparse_label[:4] = 0  # unlabeled: ignored
    sparse_prediction = np.zeros((HEIGHT, WIDTH), np.uint8)  # road (train id 0)
    sparse_prediction[:, 90:] = 13  # car
    sparse_prediction[20:30, 10:30] = 11  # person, absent from the labels
    sparse_prediction[40:44, 40:50] = 18  # bicycle, absent too
    eval_ids = np.array(sorted(_LABEL_ID_TO_TRAIN_ID) + [0, 1, 4, 5, 6], np.uint8)  # + ignored classes
    full_labels = [eval_ids[rng.integers(0, len(eval_ids), (HEIGHT, WIDTH))] for _ in range(3)]
    full_predictions = []
    for label in full_labels:
        train_ids = np.array([_LABEL_ID_TO_TRAIN_ID.get(int(v), 255) for v in range(256)], np.uint8)[label]
        prediction = np.where(train_ids == 255, rng.integers(0, 19, train_ids.shape), train_ids).astype(np.uint8)
        flip = rng.random(label.shape) < 0.3
        full_predictions.append(np.where(flip, rng.integers(0, 19, label.shape), prediction).astype(np.uint8))
    return {"sparse": ([sparse_label], [sparse_prediction]), "all-class": (full_labels, full_predictions)}


@pytest.mark.parametrize("case", ["sparse", "all-class"])
def test_cityscapes_miou_and_per_class_iou_equal_cityscapesscripts(tmp_path, case):
    labels, predictions = _cases()[case]
    dataset = CityscapesDataset.from_root(_snippet_root(tmp_path / "root", labels), "val")
    label_files = [next(f.mask for f in video.frames if f.mask is not None) for video in dataset.videos]
    official = _official(label_files, predictions, tmp_path / "predictions")
    ours = _ours(dataset, predictions, dataset.official_miou_mode)

    assert dataset.official_miou_mode == "mmseg"
    assert ours["miou"] == pytest.approx(100 * official["averageScoreClasses"], abs=1e-3)
    for name in CITYSCAPES_CLASSES:
        score = official["classScores"][name]
        assert (ours["per_class_iou"][name] is None) == math.isnan(score), name
        if not math.isnan(score):
            assert ours["per_class_iou"][name] == pytest.approx(100 * score, abs=1e-3), name
    vspw_mode = _ours(dataset, predictions, "vspw")["miou"]
    if case == "sparse":  # two classes labelled, four predicted: VSPW's averaging is far off
        assert vspw_mode - ours["miou"] > 20
    else:  # every class labelled: the modes agree
        assert vspw_mode == pytest.approx(ours["miou"])


def test_bench_run_on_cityscapes_defaults_to_the_official_mode_and_records_it(tmp_path):
    labels, _ = _cases()["sparse"]
    root = _snippet_root(tmp_path / "root", labels)
    output = tmp_path / "rows.jsonl"
    common = ["run", "--dataset", "cityscapes", "--data-root", str(root), "--methods", "perframe", "--random-weights",
              "--speed-rounds", "1", "--quiet"]
    assert main([*common, "--output", str(output)]) == 0
    assert main([*common, "--miou-mode", "vspw", "--output", str(tmp_path / "vspw.jsonl")]) == 0
    row = json.loads(output.read_text().splitlines()[0])
    vspw_row = json.loads((tmp_path / "vspw.jsonl").read_text().splitlines()[0])
    assert row["metrics"]["miou_mode"] == "mmseg" and vspw_row["metrics"]["miou_mode"] == "vspw"
