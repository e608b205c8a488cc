"""``bench report --html``: one self-contained page of a report, to open in a browser with no network.

The page holds what the report writes beside it, inlined: every table (sortable: click a header),
every figure (the PNGs, as data URIs), the per-class IoU of every row, the seeds' spread where rows
were run with several seeds, and per row its provenance on demand (a "row" link opens the code
commit, the weights and where they came from, the training record with its recipe, and the row's
configuration hash). Rows of random weights carry the report's mark and a shaded background, and a
banner says that their accuracy is not a result. Animations and still figures of ``bench show``
folders given with ``--show`` are inlined too, with the rows they show.

Nothing is fetched: no script, style, font or image comes from outside the file, and a
Content-Security-Policy in the page forbids any request but ``data:`` images, so a copy mailed or
archived shows the same thing offline (tests/test_html_report.py loads it in headless Chromium and
checks that no request leaves it).
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import pandas as pd

from vssbench.benchmark.results import declared_training
from vssbench.files import atomic_path

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "base-uri 'none'; form-action 'none'")
_MIME = {".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}
_FIGURE_TITLES = {
    "accuracy_vs_gflops": "Accuracy against cost",
    "accuracy_vs_interval": "Accuracy and temporal consistency against the key-frame interval",
    "gflops_vs_interval": "Cost against the key-frame interval",
    "mvc8_vs_miou": "Temporal consistency against accuracy",
    "stt_memory": "STT over the memory length",
    "per_class_iou": "Per-class IoU of two rows",
}

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 1.5em 3em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
nav a { margin-right: 1em; } .meta { color: #555; }
.banner { background: #fff3cd; border: 1px solid #e0c060; padding: 0.6em 1em; margin: 1em 0; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th button { font: inherit; font-weight: 600; border: 0; background: none; cursor: pointer; padding: 0; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
tr.random td { background: #f6e6e6; font-style: italic; }
caption { caption-side: top; text-align: left; color: #444; max-width: 1100px; white-space: normal; padding-bottom: 0.4em; }
.scroll { overflow-x: auto; } figure { margin: 1em 0 2em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; } details { margin: 0.3em 0; } details pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
details:target summary, details[open] summary { font-weight: 600; }
"""

# Sorting: a click on a header sorts by that column, numbers as numbers ("-" last), again to reverse.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    var button = th.querySelector("button");
    button.addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[column].getAttribute("data-value") || row.cells[column].textContent.trim();
        var number = parseFloat(text);
        return isNaN(number) || !/^[-+]?[0-9.]/.test(text) ? text : number;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
function openTarget() {
  var target = location.hash && document.getElementById(location.hash.slice(1));
  if (target && target.tagName === "DETAILS") { target.open = true; }
}
window.addEventListener("hashchange", openTarget);
openTarget();
"""


def _data_uri(path: Path) -> str:
    return f"data:{_MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _cell(value: object, column: str, number) -> str:
    shown = number(value, column)
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    attributes = ' class="num"' if numeric else ""
    if isinstance(value, float) and value == value:
        attributes += f' data-value="{value!r}"'
    return f"<td{attributes}>{html.escape(str(shown))}</td>"


def html_table(name: str, title: str, table: pd.DataFrame, frame: pd.DataFrame, number) -> str:
    """A sortable table; where its rows are rows of ``frame`` (same index), a link to each one's
    provenance, and random-weight rows shaded."""
    linked = name != "seeds" and bool(table.index.isin(frame.index).all())
    head = "".join(f'<th scope="col"><button type="button">{html.escape(str(c))}</button></th>' for c in table.columns)
    if linked:
        head += '<th scope="col"><button type="button">Row</button></th>'
    body = []
    for index, values in table.iterrows():
        cells = "".join(_cell(v, c, number) for c, v in values.items())
        attributes = ""
        if linked:
            row = frame.loc[index]
            cells += f'<td><a href="#row-{index}">{html.escape(row["label"])}</a></td>'
            attributes = ' class="random"' if row["random"] else ""
        body.append(f"<tr{attributes}>{cells}</tr>")
    return (f'<div class="scroll"><table class="sortable" id="table-{html.escape(name)}">'
            f"<caption>{html.escape(title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def per_class_table(frame: pd.DataFrame, number) -> str:
    """Every row's IoU per class (the classes of the first row's dataset order)."""
    classes: list[str] = []
    for values in frame["per_class_iou"]:
        classes += [c for c in values if c not in classes]
    table = pd.DataFrame([{"Row": row["label"], **{c: row["per_class_iou"].get(c) for c in classes}}
                          for _, row in frame.iterrows()], index=frame.index)
    return html_table("per_class_iou", "IoU (%) per class and row; click a header to sort", table, frame, number)


def _provenance(row: dict, index: int) -> str:
    """A row's record, opened on demand: the commit, the weights and their training, the configuration."""
    env, checkpoint = row.get("env") or {}, row.get("checkpoint") or {}
    training = declared_training(row) or {}
    recipe = training.get("recipe") or {}
    shipped = checkpoint.get("shipped")
    weights = ("random (--random-weights): accuracy is not a result" if row.get("weights") == "random"
               else f"shipped with vssbench ({shipped.get('manifest')})" if shipped
               else checkpoint.get("path") or "-")
    facts = [("code", env.get("git_commit")), ("created", row.get("created_at")),
             ("device", env.get("device_name") or env.get("device")), ("torch", env.get("torch_version")),
             ("weights", weights), ("weights sha256", checkpoint.get("sha256")),
             ("training", f"{training.get('iterations')} iterations on {training.get('dataset')}/"
                          f"{training.get('split')}, seed {training.get('seed')}" if training else "no record"),
             ("recipe", f"{recipe.get('recipe')} ({recipe.get('method')} on {recipe.get('dataset')})"
                        if recipe else "-"),
             ("configuration", row.get("config_hash"))]
    listing = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts)
    record = {key: row.get(key) for key in ("checkpoint", "env", "schedule", "variant", "videos", "weights",
                                            "random_parameters") if key in row}
    return (f'<details id="row-{index}"><summary>{html.escape(row["label"])}</summary><dl>{listing}</dl>'
            f"<pre>{html.escape(json.dumps(record, indent=1, default=str))}</pre></details>")


def _figures(paths: list[Path]) -> str:
    parts = []
    for path in paths:
        if path.suffix != ".png":
            continue
        title = _FIGURE_TITLES.get(path.stem, path.stem.replace("_", " "))
        parts.append(f'<figure id="figure-{html.escape(path.stem)}"><img alt="{html.escape(title)}" '
                     f'src="{_data_uri(path)}"><figcaption>{html.escape(title)} ({html.escape(path.name)}, '
                     f"PDF beside it)</figcaption></figure>")
    return "".join(parts)


def _qualitative(shows: list[tuple[Path, dict]]) -> str:
    parts = []
    for folder, manifest in shows:
        rows = ", ".join(f"{r['label']} (weights: {r.get('weights') or 'trained'}"
                         + (", shipped" if (r.get("checkpoint") or {}).get("shipped") else "") + ")"
                         for r in manifest["rows"])
        parts.append(f"<p class=\"meta\">From <code>{html.escape(str(folder))}</code>: {html.escape(rows)}, "
                     f"{html.escape(manifest['dataset'])}/{html.escape(manifest['split'])}.</p>")
        for video, entry in manifest["videos"].items():
            for mode, relative in entry["animations"].items():
                path = folder / relative
                parts.append(f'<figure class="animation"><img alt="{html.escape(mode)} {html.escape(video)}" '
                             f'src="{_data_uri(path)}"><figcaption>{html.escape(video)}: {html.escape(mode)} '
                             f"(frames {entry['frames'][0]}-{entry['frames'][-1]})</figcaption></figure>")
            still = next(folder / f for f in entry["still"]["files"] if f.endswith(".png"))
            parts.append(f'<figure class="still"><img alt="still {html.escape(video)}" src="{_data_uri(still)}">'
                         f"<figcaption>{html.escape(video)}: frames {entry['still']['frames']}, one row per "
                         f"prediction</figcaption></figure>")
    return "".join(parts)


def write_page(paths: list[Path], frame: pd.DataFrame, tables: dict[str, tuple[str, pd.DataFrame]],
               figures: list[Path], out: Path, number, shows: list[tuple[Path, dict]] = ()) -> Path:
    """Write ``out/report.html`` for the rows of ``frame`` (read from ``paths``) and return its path."""
    rows = dict(frame["record"].items())
    commits = sorted({str((row.get("env") or {}).get("git_commit")) for row in rows.values()})
    random = frame["random"].any()
    sections = [("tables", "Tables"), ("per-class", "Per-class IoU"), ("figures", "Figures")]
    if shows:
        sections.append(("qualitative", "Qualitative"))
    sections.append(("provenance", "Provenance"))
    parts = [f"<h1>vssbench report</h1><p class=\"meta\">{len(frame)} finished rows from "
             f"{html.escape(', '.join(map(str, paths)))}; datasets {html.escape(', '.join(sorted(set(frame['dataset']))))}"
             f"; code {html.escape(', '.join(commits))}. Click a table header to sort; a row link opens "
             f"that row's provenance.</p>",
             "<nav>" + "".join(f'<a href="#{key}">{title}</a>' for key, title in sections) + "</nav>"]
    if random:
        parts.append('<p class="banner" id="random-banner">Rows marked [random weights] (shaded) were evaluated '
                     "with random or partly random weights: their cost is real, their accuracy is not a result."
                     "</p>")
    parts.append('<h2 id="tables">Tables</h2>')
    for name, (title, table) in tables.items():
        parts.append(html_table(name, title, table, frame, number))
    if "seeds" not in tables:
        parts.append('<p class="meta" id="no-seeds">No configuration was run with several seeds, so no spread '
                     "over seeds is shown (bench run --seeds 0,1,2 gives one).</p>")
    parts += ['<h2 id="per-class">Per-class IoU</h2>', per_class_table(frame, number)]
    parts += ['<h2 id="figures">Figures</h2>', _figures(figures)]
    if shows:
        parts += ['<h2 id="qualitative">Qualitative (bench show)</h2>', _qualitative(shows)]
    parts.append('<h2 id="provenance">Provenance</h2>')
    parts += [_provenance(row, index) for index, row in rows.items()]
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>vssbench report</title><style>{_STYLE}</style></head><body>{''.join(parts)}"
            f"<script>{_SCRIPT}</script></body></html>\n")
    path = out / "report.html"
    with atomic_path(path) as temporary:
        temporary.write_text(page)
    return path
