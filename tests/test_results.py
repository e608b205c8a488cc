"""The row schema (vssbench.benchmark.results): rows built in one layout by one function per kind, rows
of earlier layouts read in the current one, result files that keep other rows' lines as written."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from vssbench.benchmark.results import (ProfileRow, ResultFile, RunRow, declared_training, load_rows, profile_row,
                                        run_row)
from vssbench.cli import main

DATA = Path(__file__).parent / "data"
# rows_before_videos.jsonl: the first row of results/baselines/synthetic-cpu.jsonl at 2cce7a7 (2026-11-21),
# before rows recorded the scored videos and the weights; rows_before_declared.jsonl: the same file's first
# row at 88a099b, the checkpoint's own training record directly in ``checkpoint``.
OLD_FILES = ("rows_before_videos.jsonl", "rows_before_declared.jsonl")
CONFIG = {"method": "copy", "preset": "segformer-tiny", "variant": "default", "dataset": "synthetic", "split": "val",
          "resolution": [128, 224], "videos": {"count": 1, "sha256": "0123456789abcdef"}, "device": "cpu",
          "miou_mode": "vspw", "vc_protocol": "vspw", "seed": 0,
          "schedule": {"type": "interval", "key_interval": 5, "offset": 0}, "checkpoint_sha256": None}


def test_rows_of_earlier_layouts_are_read_in_the_current_one(tmp_path, capsys):
    for name in OLD_FILES:
        (raw,) = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
        (row,) = load_rows(DATA / name)
        assert list(row) == list(RunRow.__annotations__)  # every field, in the current order
        assert {key: row[key] for key in raw if key != "checkpoint"} == {k: v for k, v in raw.items() if k != "checkpoint"}
        assert row["checkpoint"]["declared"] == ({"by": "checkpoint", "training": raw["checkpoint"]["training"],
                                                  "converted_from": None} if "training" in raw["checkpoint"] else None)
        assert "training" not in row["checkpoint"] and row["checkpoint"]["sha256"] == raw["checkpoint"]["sha256"]
        assert declared_training(raw) == declared_training(row) == raw["checkpoint"].get("training")
        assert row["weights"] is None and row["random_parameters"] is None  # unknown, never taken for random
    assert load_rows(DATA / OLD_FILES[0])[0]["videos"] is None
    assert load_rows(DATA / OLD_FILES[0], upgrade=False)[0] == json.loads((DATA / OLD_FILES[0]).read_text())
    for name in OLD_FILES:  # the readers take them: bench check compares an old file with itself
        assert main(["check", str(DATA / name), "--baseline", str(DATA / name)]) == 0
        assert "1 passed, 0 regressed" in capsys.readouterr().out


def test_a_result_file_keeps_earlier_rows_as_written(tmp_path):
    path = tmp_path / "rows.jsonl"
    shutil.copy(DATA / OLD_FILES[1], path)
    before = path.read_text()
    ResultFile(path).put(run_row(CONFIG, "copy_segformer-tiny_k5", "segformer-tiny", {}, None, {"seed": 0}))
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 2 and lines[0] == before  # the old line byte for byte, the new row after it


def test_run_and_profile_rows_are_built_in_one_layout(monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda _: "2026-12-08T00:00:00+0000")
    row = run_row(CONFIG, "copy_segformer-tiny_k5", "segformer-tiny", {"segmentor": 3}, None, {"seed": 0})
    assert list(row) == list(RunRow.__annotations__)
    assert json.dumps(row) == (
        '{"schema": "vssbench.result/1", "label": "copy_segformer-tiny_k5", "method": "copy", "preset": '
        '"segformer-tiny", "variant": "default", "dataset": "synthetic", "split": "val", "resolution": [128, 224], '
        '"videos": {"count": 1, "sha256": "0123456789abcdef"}, "segmentor_preset": "segformer-tiny", "schedule": '
        '{"type": "interval", "key_interval": 5, "offset": 0}, "status": "ok", "error": null, "metrics": null, '
        '"cost": null, "timing": null, "predictions_dir": null, "weights": "random", "random_parameters": '
        '{"segmentor": 3}, "checkpoint": null, "env": {"seed": 0}, "config_hash": "' + row["config_hash"] + '", '
        '"created_at": "2026-12-08T00:00:00+0000"}')
    assert run_row(CONFIG, "x", "segformer-tiny", {}, None, {})["weights"] == "trained"
    config = {"kind": "profile", "spec": "copy:segformer-tiny", "variant": "default", "resolution": [64, 96],
              "num_classes": 8, "intervals": [1, 5], "device": "cpu"}
    profile = profile_row(config, "copy_segformer-tiny", "copy", "segformer-tiny", {"seed": 0})
    assert list(profile) == list(ProfileRow.__annotations__)
    assert (profile["schema"], profile["resolution"], profile["num_classes"]) == ("vssbench.profile/1", [64, 96], 8)


def test_bench_run_and_profile_write_the_typed_layouts(tmp_path):
    assert main(["-q", "run", "--methods", "copy", "--intervals", "2", "--random-weights", "--max-videos", "1",
                 "--speed-rounds", "0", "--output", str(tmp_path / "run.jsonl")]) == 0
    assert main(["-q", "profile", "--methods", "copy", "--resolution", "64x96", "--num-classes", "8",
                 "--no-latency", "--output", str(tmp_path / "profile.jsonl")]) == 0
    (row,) = load_rows(tmp_path / "run.jsonl", upgrade=False)
    (profile,) = load_rows(tmp_path / "profile.jsonl")
    assert list(row) == list(RunRow.__annotations__) and list(profile) == list(ProfileRow.__annotations__)
