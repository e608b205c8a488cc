"""The calibration contract of the default synthetic dataset (issue 2's acceptance).

Runs the README's main job (default dataset, auto-trained segformer-tiny) in a fresh
cache: the per-frame model must learn the data (>= 60 mIoU) and copying the key
frame's prediction must cost accuracy as the interval grows (k=10 at least 3 mIoU
below k=1). Too easy or too hard a generator fails here.
"""

import pytest

from vssbench.benchmark.results import load_rows
from vssbench.cli import main


@pytest.mark.slow
def test_default_synthetic_calibration(tmp_path):
    output = tmp_path / "rows.jsonl"
    assert main(["run", "--methods", "perframe,copy", "--intervals", "1,10", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(output)]) == 0
    miou = {row["label"]: row["metrics"]["miou"] for row in load_rows(output)}
    assert miou["perframe_segformer-tiny_k1"] >= 60
    assert miou["copy_segformer-tiny_k10"] <= miou["copy_segformer-tiny_k1"] - 3
