"""The README's quick start is what `make run` prints and draws: its table is the committed rows of
`make quickstart-docs` (the same bench command as `make run`), its figure is drawn from those rows,
and a row recomputed with the shipped weights gives the committed metrics."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vssbench.benchmark.report import accuracy_cost_figure
from vssbench.benchmark.results import load_rows
from vssbench.benchmark.tables import run_table
from vssbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "reports" / "quickstart"


def _make_variables() -> dict[str, str]:
    text = (ROOT / "Makefile").read_text()
    return dict(re.findall(r"^(\w+) :?= (.*)$", text, re.M))


def _recipe(target: str) -> str:
    text = (ROOT / "Makefile").read_text()
    return re.search(rf"^{re.escape(target)}:.*\n\t(.*)$", text, re.M).group(1)


def test_make_run_and_the_readme_run_the_same_command():
    assert _recipe("run").startswith("$(BIN)/$(QUICKSTART) ")
    assert "$(BIN)/$(QUICKSTART) " in (ROOT / "Makefile").read_text().split("quickstart-docs:")[1]
    command = _make_variables()["QUICKSTART"]
    assert "--shipped-weights" in command and "--intervals 1,5,10" in command


def test_the_readme_table_is_the_committed_rows():
    readme = (ROOT / "README.md").read_text()
    table = run_table(load_rows(QUICKSTART / "rows.jsonl"))
    assert table in readme
    assert "reports/quickstart/accuracy_vs_gflops.png" in readme


def test_the_readme_figure_is_drawn_from_those_rows(tmp_path):
    rows = load_rows(QUICKSTART / "rows.jsonl")
    drawn = accuracy_cost_figure([QUICKSTART / "rows.jsonl"], tmp_path / "figure.png", {r["label"] for r in rows})[0]
    committed = np.asarray(Image.open(QUICKSTART / "accuracy_vs_gflops.png").convert("L"), dtype=float)
    ours = np.asarray(Image.open(drawn).convert("L"), dtype=float)
    assert ours.shape == committed.shape
    assert np.abs(ours - committed).mean() < 2.0  # the same picture (font rasterisation may differ by a pixel)


@pytest.mark.slow
def test_a_row_recomputed_with_the_shipped_weights_gives_the_committed_metrics(tmp_path):
    committed = {r["label"]: r for r in load_rows(QUICKSTART / "rows.jsonl")}
    assert main(["run", "--methods", "perframe", "--intervals", "1", "--shipped-weights", "--speed-rounds", "0",
                 "--output", str(tmp_path / "rows.jsonl")]) == 0
    row = load_rows(tmp_path / "rows.jsonl")[0]
    expected = committed[row["label"]]
    assert row["checkpoint"]["sha256"] == expected["checkpoint"]["sha256"]
    for metric in ("miou", "wiou", "mvc8", "mvc16"):
        assert row["metrics"][metric] == pytest.approx(expected["metrics"][metric], abs=0.01)
