"""bench profile --fidelity: statuses and exit codes on small entries, and the packaged published
numbers and the committed report kept complete (every published entry of the issue's tables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vssbench.benchmark.fidelity import Configuration, compare, measure
from vssbench.benchmark.profiler import published_numbers
from vssbench.cli import main

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = {"params": 0.03, "gflops": 0.10}


@pytest.fixture(scope="module")
def tiny() -> dict:
    entry = {"spec": "perframe:segformer-tiny", "resolution": [64, 96], "num_classes": 8}
    return {"entry": entry, "ours": measure(Configuration.of(entry))}


def _file(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "published.json"
    path.write_text(json.dumps({"tolerance": TOLERANCE, "tables": {"T": "a test table"}, "entries": entries}))
    return path


def _entry(tiny: dict, row: str, published: dict, causes: dict | None = None) -> dict:
    return {"table": "T", "row": row, **tiny["entry"], "published": published, **({"causes": causes} if causes else {})}


def test_statuses_within_tolerance_explained_and_unexplained(tiny):
    gflops = tiny["ours"]["gflops_key"]
    entries = [
        _entry(tiny, "within", {"params_m": tiny["ours"]["params_m"] * 1.02, "gflops_key": gflops * 0.92}),
        _entry(tiny, "no cause", {"gflops_key": gflops * 2}),
        _entry(tiny, "misprint", {"gflops_key": gflops * 2}, {"gflops_key": {"cause": "a misprint.",
                                                                             "recomputed": gflops}}),
        _entry(tiny, "resolution", {"gflops_key": gflops * 4}, {"gflops_key": {"cause": "4x the pixels.",
                                                                               "measure": {"resolution": [128, 192]}}}),
        _entry(tiny, "text only", {"gflops_key": gflops * 2}, {"gflops_key": {"cause": "a guess."}}),
        _entry(tiny, "wrong cause", {"gflops_key": gflops * 2},
               {"gflops_key": {"cause": "x", "recomputed": gflops * 3}}),
    ]
    statuses = {(c.entry["row"], c.quantity): c.status for c in compare(entries, TOLERANCE)}
    assert statuses == {("within", "params_m"): "ok", ("within", "gflops_key"): "ok",
                        ("no cause", "gflops_key"): "unexplained", ("misprint", "gflops_key"): "explained",
                        ("resolution", "gflops_key"): "explained", ("text only", "gflops_key"): "unexplained",
                        ("wrong cause", "gflops_key"): "explained in part"}


def test_a_spec_that_does_not_build_or_a_quantity_it_lacks_is_named_in_the_report(tiny, tmp_path):
    unknown = {**_entry(tiny, "unknown", {"params_m": 1.0}), "spec": "nosuch:tiny"}
    lacking = _entry(tiny, "lacking", {"flow_params_m": 1.0})
    comparisons = compare([unknown, lacking], TOLERANCE)
    assert [(c.status, c.detail.startswith("unknown method") or c.detail) for c in comparisons] == [
        ("not implemented", True), ("unexplained", "no flow_params_m")]
    report_dir = tmp_path / "reports"
    assert main(["profile", "--fidelity", "--quiet", "--published", str(_file(tmp_path, [unknown, lacking])),
                 "--report-dir", str(report_dir)]) == 1
    report = (report_dir / "fidelity.md").read_text()
    assert "2 quantities: 1 unexplained, 1 not implemented." in report
    assert "| unexplained: no flow_params_m" in report


def test_exit_code_is_1_only_for_a_quantity_out_of_tolerance_without_a_cause(tiny, tmp_path, capsys):
    gflops = tiny["ours"]["gflops_key"]
    report_dir = tmp_path / "reports"
    explained = _entry(tiny, "misprint", {"gflops_key": gflops * 2}, {"gflops_key": {"cause": "a misprint.",
                                                                                     "recomputed": gflops}})
    assert main(["profile", "--fidelity", "--quiet", "--published", str(_file(tmp_path, [explained])),
                 "--report-dir", str(report_dir)]) == 0
    report = (report_dir / "fidelity.md").read_text()
    assert "explained [1]" in report and "1. **misprint** (T), GFLOPs key: a misprint." in report
    capsys.readouterr()
    unexplained = _entry(tiny, "no cause", {"gflops_key": gflops * 2})
    assert main(["profile", "--fidelity", "--quiet", "--published", str(_file(tmp_path, [explained, unexplained])),
                 "--report-dir", str(report_dir)]) == 1
    assert "1 quantities are outside tolerance without a cause" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main(["profile", "--fidelity", "--published", str(tmp_path / "bad.json")]) == 2


def test_published_numbers_cover_every_table_of_the_issue():
    numbers = published_numbers()
    by_table: dict[str, list[dict]] = {}
    for entry in numbers["entries"]:
        assert entry["table"] in numbers["tables"], entry
        by_table.setdefault(entry["table"], []).append(entry)
    assert {t: len(e) for t, e in by_table.items()} == {"MPVSS T1": 19, "MPVSS T2": 23, "MPVSS T3b": 5,
                                                        "MPVSS supp. TIII": 12, "TFC T1": 12, "TFC 4.2": 4}
    table_3b = {e["variant"]: next(iter(e["published"].values())) for e in by_table["MPVSS T3b"]}
    assert table_3b == {"optical-flow": 38.68, "query-random": 37.56, "query-learned": 37.56,
                        "query-for-pf": 40.08, "query-based-flow": 40.08}


def test_the_committed_report_lists_every_entry_and_nothing_unexplained():
    report = (ROOT / "reports" / "fidelity.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| MPVSS") or line.startswith("| TFC")]
    quantities = sum(len(e["published"]) for e in published_numbers()["entries"])
    assert len(rows) == quantities
    assert not any(line.rstrip(" |").endswith("unexplained") for line in rows)
