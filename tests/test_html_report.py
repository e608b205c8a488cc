"""`bench report --html`: the page as a person sees it, rendered in headless Chromium.

Each test loads a page and checks that it logs no error, requests nothing outside the file, and holds
every table and figure; one shows the check itself fails on a page that breaks those rules. Where
Debian's ``chromium`` is absent (``.ci/run`` installs it) the browser tests skip, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from vssbench.cli import main

ROOT = Path(__file__).parents[1]
_spec = importlib.util.spec_from_file_location("browser", ROOT / "scripts" / "browser.py")
browser = sys.modules["browser"] = importlib.util.module_from_spec(_spec)  # dataclasses look their module up
_spec.loader.exec_module(browser)
chromium, render, _outside = browser.chromium, browser.render, browser.outside_requests
needs_chromium = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed (apt-get install "
                                                               "chromium; .ci/run does), so no page can be rendered")
COUNTS = {
    "tables": "document.querySelectorAll('table.sortable').length",
    "figures": "document.querySelectorAll('figure img').length",
    "animations": "document.querySelectorAll('figure.animation img').length",
    "random": "document.querySelectorAll('tr.random').length",
    "banner": "document.querySelectorAll('#random-banner').length",
    "provenance": "document.querySelectorAll('details[id^=row-]').length",
    "broken": "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length",
}


@pytest.fixture(scope="module")
def page(small_synthetic, tmp_path_factory):
    """A report page of a perframe/copy run (random weights, two seeds) with a `bench show` folder inlined."""
    work = tmp_path_factory.mktemp("html")
    rows = work / "rows.jsonl"
    assert main(["-q", "run", "--methods", "perframe,copy", "--intervals", "1,5", "--random-weights", "--seeds",
                 "0,1", "--data-root", str(small_synthetic), "--output", str(rows), "--speed-rounds", "0",
                 "--save-predictions", str(work / "predictions")]) == 0
    # each seed saved its predictions in its own folder; draw seed 0's rows
    seed0 = [json.loads(line) for line in rows.read_text().splitlines() if json.loads(line)["env"]["seed"] == 0]
    (work / "seed0.jsonl").write_text("".join(json.dumps(row) + "\n" for row in seed0))
    assert main(["-q", "show", str(work / "seed0.jsonl"), "--data-root", str(small_synthetic), "--out",
                 str(work / "show"), "--frames", "0:6"]) == 0
    out = work / "report"
    assert main(["-q", "report", str(rows), "--out", str(out), "--html", "--show", str(work / "show")]) == 0
    return out / "report.html", [json.loads(line) for line in rows.read_text().splitlines()]


def test_page_is_one_file_with_every_table_figure_and_row(page):
    path, rows = page
    text = path.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch, not even a link
    for table in ("comparison_synthetic-", "seeds", "per_frame_cost", "per_class_iou"):  # the small set's name
        assert f'id="table-{table}' in text
    for figure in ("accuracy_vs_gflops", "accuracy_vs_interval", "mvc8_vs_miou"):
        assert f'id="figure-{figure}"' in text
    assert text.count('<details id="row-') == len(rows)
    # Rows of two seeds share labels: each one's provenance is its own record, not the other seed's.
    seeds = re.findall(r'<details id="row-\d+"><summary>([^<]+)</summary>.*?&quot;seed&quot;: (\d)', text, re.S)
    assert sorted(seeds) == sorted((row["label"], str(row["env"]["seed"])) for row in rows)


@needs_chromium
def test_page_renders_offline_with_no_error_and_no_request(page, tmp_path):
    path, rows = page
    load = render(path, tmp_path / "report.png", expressions=tuple(COUNTS.values()))
    counts = {name: load.values[expression] for name, expression in COUNTS.items()}
    assert load.errors() == []
    assert _outside(load.requests, path) == []
    assert counts["tables"] == 4 and counts["broken"] == 0  # comparison, seeds, per-frame cost, per-class IoU
    assert counts["animations"] == 3 and counts["figures"] >= 3 + 1 + 4  # animations, still, report figures
    assert counts["provenance"] == len(rows)
    assert counts["banner"] == 1 and counts["random"] > 0  # random weights are marked where they appear
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")


@needs_chromium
def test_tables_sort_on_a_click_and_a_row_link_opens_its_provenance(page):
    path, _ = page
    first_cells = ("Array.from(document.querySelectorAll('[id^=table-comparison_] tbody tr'))"
                   ".map(r => r.cells[2].textContent)")
    click = ("(() => { const b = Array.from(document.querySelectorAll('[id^=table-comparison_] th button'))"
             ".find(b => b.textContent === 'Schedule'); b.click(); b.click(); return 0; })()")
    opened = ("(() => { location.hash = document.querySelector('[id^=table-comparison_] a').getAttribute('href');"
              " return 0; })()")
    before, after = first_cells + " // before", first_cells + " // after"
    load = render(path, expressions=(before, click, after, opened, "document.querySelector(location.hash).open"))
    assert load.values[before] != load.values[after]
    assert load.values[after] == sorted(load.values[after], reverse=True)  # two clicks: descending
    assert load.values["document.querySelector(location.hash).open"] is True
    assert load.errors() == []


@needs_chromium
def test_the_check_sees_errors_and_requests(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://192.0.2.1/x.png"><script>console.error("boom");'
                   "undefinedFunction();</script></body></html>")
    load = render(bad)
    assert any("boom" in text for text in load.errors())
    assert any("undefinedFunction" in text for text in load.exceptions)
    assert _outside(load.requests, bad) == ["http://192.0.2.1/x.png"]


@needs_chromium
def test_committed_synthetic_page_renders_offline(tmp_path):
    path = ROOT / "reports" / "synthetic" / "report.html"
    load = render(path, expressions=(COUNTS["tables"], COUNTS["animations"], COUNTS["broken"]))
    assert load.errors() == [] and _outside(load.requests, path) == []
    assert load.values[COUNTS["tables"]] >= 5 and load.values[COUNTS["animations"]] == 3
    assert load.values[COUNTS["broken"]] == 0
    assert (ROOT / "reports" / "synthetic" / "report.png").is_file()
