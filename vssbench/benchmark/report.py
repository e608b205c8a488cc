"""Paper-style tables and figures from result rows (``bench report``).

Tables (each written as Markdown, LaTeX and CSV):

* ``comparison_<dataset>``: MPVSS Table 1 / TFC Table 1 layout (method, backbone,
  schedule, mIoU, WIoU, mVC8, mVC16, GFLOPs, params, FPS), and the speed against the
  per-frame segmentor timed in alternation (``cost.speed_vs_per_frame``), which unlike the
  FPS of rows timed minutes apart a drifting machine does not skew; for Cityscapes the
  MPVSS Table 2 layout (no VC: its validation frames are single labelled frames).
* ``ablation_<method>`` for every method whose rows hold more than one variant, plug-ins included,
  and for ``mpvss`` and ``tfc`` whenever they have rows (the layout of MPVSS Table 3 and TFC Table
  2): every variant at every interval that was run, and a figure of the same,
  ``ablation_<method>.png``.
* ``memory_stt``: STT's sweep over the memory length M (its supplementary Figure 1 data).
* ``per_frame_cost``: MPVSS supplementary Table III: parameters and GFLOPs of the key and
  non-key paths of every method, at the resolution they were counted at.
* ``seeds`` (when a configuration was run with several seeds, ``bench run --seeds``): the mean
  and spread of mIoU and mVC8 over seeds, the per-seed values, and each variant's difference from
  its method's default variant, marked "inside the spread" where the seed ranges overlap.

GFLOPs in the comparison and ablation tables are the per-frame average over a 15-frame
clip at the row's interval (docs/cost.md). Every table's caption names the devices
FPS was measured on and the metric modes of its rows. Rows of one configuration from
several runs (seeds, training schedules) stay apart in the tables: a seed column and a training
column (iterations down the chain of checkpoints) appear when the rows differ in them. In the
figures, training schedules stay separate series named in the legend, while the seeds of one
configuration are one series: the mean over seeds, with bars from the lowest to the highest seed
(a band for per-frame reference lines), so that a difference is seen against the spread.

Rows of random (or partly random) weights (``weights: random``, from ``--random-weights``) are
marked wherever they appear: "[random weights]" after the method in every table and legend,
dotted lines and hollow markers in the figures, a sentence in each caption, and they are left
out of the Pareto front. Their cost is real; their accuracy is not a result.

Figures (PNG and PDF): mIoU and mVC8 against the key-frame interval (MPVSS Figure 3),
GFLOPs against the interval, mIoU against GFLOPs with the Pareto front, mVC8 against mIoU,
mIoU and mVC8 against STT's memory length, and the per-class IoU of two chosen rows (MPVSS
supplementary Figure B).
"""

from __future__ import annotations

import colorsys
import json
import math
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from vssbench.benchmark.regression import paired_ratio, row_key  # noqa: E402
from vssbench.benchmark.results import declared_training, load_rows, schedule_interval, schedule_text  # noqa: E402
from vssbench.methods.base import registered_methods  # noqa: E402

FORMATS = ("md", "tex", "csv")
METRICS = ("miou", "wiou", "mvc8", "mvc16")
METRIC_NAMES = {"miou": "mIoU", "wiou": "WIoU", "mvc8": "mVC8", "mvc16": "mVC16"}
RANDOM_FLOW_MARK = " (random RAFT)"  # a TC whose flow network had random weights
SPEED_COLUMN = "Speed vs per-frame"
MEMORY_COLUMN = "Peak memory (MiB)"
# Columns that tell apart runs of one configuration: their table headers and how legends print them.
RUN_COLUMNS = {"seed": "Seed", "training": "Training (iterations)"}
RUN_LEGENDS = {"seed": "seed {}", "training": "trained {} it."}
RANDOM_MARK = " [random weights]"


def load_frame(paths: list[Path]) -> pd.DataFrame:
    """One row per finished (status ok) result row of the given files, flattened for tables."""
    records = []
    for path in paths:
        for row in load_rows(path):
            if row.get("status") != "ok" or not row.get("metrics"):
                continue
            schedule, cost, metrics = row["schedule"], row.get("cost") or {}, row["metrics"]
            memory, interval = schedule.get("memory_frames"), schedule_interval(schedule)
            random = row.get("weights") == "random"
            records.append({
                "file": str(path),
                "videos": json.dumps(row.get("videos"), sort_keys=True),
                "label": row["label"],
                "random": random,
                "method": row["method"],
                "preset": row["preset"],
                "variant": row["variant"],
                "segmentor_preset": row.get("segmentor_preset"),
                "dataset": row["dataset"],
                "split": row["split"],
                "schedule": schedule_text(schedule),
                "k": None if memory is not None else interval,
                "M": memory,
                **{name: metrics.get(name) for name in METRICS},
                "tc": metrics.get("tc"),
                "tc_random_flow": bool(((metrics.get("tc_protocol") or {}).get("flow") or {}).get("random")),
                "gflops": (cost.get("gflops_avg") or {}).get(str(interval)),
                "gflops_key": cost.get("gflops_key"),
                "gflops_nonkey": cost.get("gflops_nonkey"),
                "flop_resolution": "x".join(map(str, cost.get("flop_resolution") or [])) or None,
                "params_m": cost.get("params_m"),
                "fps": (cost.get("fps") or {}).get(str(interval)),
                "fps_device": cost.get("device"),
                "peak_mib": cost.get("peak_memory_mib"),
                "peak_kind": cost.get("peak_memory"),
                "speed": paired_ratio(row),
                "query_fraction": cost.get("query_fraction_measured"),
                "miou_mode": metrics.get("miou_mode"),
                "vc_protocol": metrics.get("vc_protocol"),
                "per_class_iou": metrics.get("per_class_iou") or {},
                "seed": (row.get("env") or {}).get("seed"),
                "training": training_text(declared_training(row)),
                "configuration": row_key(row) + (" random weights" if random else ""),
                "record": row,  # the row as read, for what the tables leave out (the HTML page's provenance)
            })
    if not records:
        raise ValueError(f"no finished result rows in {', '.join(map(str, paths))}")
    frame = pd.DataFrame.from_records(records)
    _require_one_video_selection(frame)
    return frame


def _require_one_video_selection(frame: pd.DataFrame) -> None:
    """Rows of one dataset scored on different splits or videos (``--max-videos``, another split list)
    are not comparable: a table or figure holding both would mislead, so the report refuses them,
    naming the files of each selection."""
    for dataset, rows in frame.groupby("dataset"):
        selections = rows.groupby(["split", "videos"])
        if selections.ngroups > 1:
            described = "; ".join(
                f"{split} split, {json.loads(videos)['count'] if json.loads(videos) else '?'} videos "
                f"({json.loads(videos)['sha256'] if json.loads(videos) else 'unrecorded'}): "
                f"{', '.join(sorted(set(group['file'])))}"
                for (split, videos), group in selections)
            raise ValueError(f"rows of {dataset} were scored on {selections.ngroups} different selections of videos, "
                             f"which no table or figure can compare: {described}. Report each selection on its own")


def training_text(training: dict | None) -> str | None:
    """A row's training in iterations, down the chain of checkpoints it started from: "3000 from 1800"
    is a stage trained 3000 iterations on a segmentor trained 1800. None for weights without a record."""
    if not training:
        return None
    starts = [training_text(start) or "?" for start in training.get("started_from") or []]
    nested = [f"({start})" if " from " in start else start for start in starts]
    return f"{training.get('iterations')} from {', '.join(nested)}" if starts else str(training.get("iterations"))


def run_columns(frame: pd.DataFrame) -> list[str]:
    """The columns of :data:`RUN_COLUMNS` in which rows of one configuration differ, so that their
    runs stay apart (methods trained on different schedules alone do not need the column)."""
    groups = frame.astype({column: str for column in RUN_COLUMNS}).groupby("configuration")
    return [column for column in RUN_COLUMNS if (groups[column].nunique() > 1).any()]


ABLATION_TITLES = {"mpvss": "MPVSS ablation (Table 3)", "tfc": "TFC ablation (Table 2)"}


def ablation_methods(frame: pd.DataFrame) -> list[str]:
    """The methods whose rows hold more than one variant, built-in or plug-in alike, and ``mpvss`` and
    ``tfc`` whenever they have rows (titled after the paper tables they reproduce): each gets an ablation
    table and figure."""
    counts = frame[frame["k"].notna()].groupby("method")["variant"].nunique()
    return sorted(set(counts[counts > 1].index) | (set(counts.index) & set(ABLATION_TITLES)))


def is_default_variant(method: str, variant: str) -> bool:
    cls = registered_methods().get(method)
    return variant == (cls.variants[0] if cls else "default")


def method_name(row: pd.Series) -> str:
    """``method`` plus the variant when it is not the method's default, as tables and legends print it,
    marked when its weights are random."""
    name = row["method"] if is_default_variant(row["method"], row["variant"]) else f"{row['method']} ({row['variant']})"
    return name + (RANDOM_MARK if row.get("random") else "")


def caption(frame: pd.DataFrame, title: str, metrics: bool = True, speed: bool = False) -> str:
    """The title, the metric modes, the devices that FPS was measured on, for tables with the speed
    column what it is, and a warning when rows of random weights are among them."""
    devices = ", ".join(sorted(set(frame["fps_device"].dropna())) or ["-"])
    kinds = sorted(set(frame["peak_kind"].dropna()))
    memory = (f" {MEMORY_COLUMN}: a key and a non-key step's peak ({', '.join(kinds)})." if kinds else "")
    random = (" Rows marked [random weights] were evaluated with random or partly random weights "
              "(--random-weights): their accuracy is not a result." if frame["random"].any() else "")
    if not metrics:
        return (f"{title}. GFLOPs at the resolution shown (fvcore, 1 multiply-add = 1 FLOP); FPS of the rows on "
                f"{devices}.{memory}{random}")
    modes = ", ".join(sorted({f"mIoU mode {a}, VC protocol {b}" for a, b in zip(frame["miou_mode"], frame["vc_protocol"])}))
    speed_text = f"; {SPEED_COLUMN}: FPS over the per-frame segmentor's, the two timed in alternation" if speed else ""
    return (f"{title}. Metrics in percent ({modes}); GFLOPs per frame averaged over a 15-frame clip; "
            f"FPS on {devices}{speed_text}.{memory}{random}")


def tables(frame: pd.DataFrame) -> dict[str, tuple[str, pd.DataFrame]]:
    """Table name -> (caption, table), for the tables the rows can fill."""
    out: dict[str, tuple[str, pd.DataFrame]] = {}
    frame = frame.assign(Method=frame.apply(method_name, axis=1))
    runs = {column: RUN_COLUMNS[column] for column in run_columns(frame)}
    for dataset, rows in frame.groupby("dataset", sort=True):
        rows = rows.sort_values(["method", "variant", "preset", "k", "M", *runs], na_position="last")
        columns = {"Method": "Method", "preset": "Backbone", "schedule": "Schedule", **runs,
                   **({"miou": "mIoU"} if dataset == "cityscapes" else {k: METRIC_NAMES[k] for k in METRICS}),
                   **({"tc": "TC"} if rows["tc"].notna().any() else {}),
                   "gflops": "GFLOPs", "params_m": "Params (M)", "fps": "FPS", "speed": SPEED_COLUMN,
                   **({"peak_mib": MEMORY_COLUMN} if rows["peak_mib"].notna().any() else {})}
        title = ("Cityscapes comparison (MPVSS Table 2 layout)" if dataset == "cityscapes"
                 else f"Comparison on {dataset} (MPVSS Table 1 / TFC Table 1 layout)")
        if rows["tc_random_flow"].any():
            title += f"; a TC marked{RANDOM_FLOW_MARK} is computed with a random RAFT (--random-weights), not a result"
            rows = rows.assign(tc=[f"{v:.2f}{RANDOM_FLOW_MARK}" if r and pd.notna(v) else v
                                   for v, r in zip(rows["tc"], rows["tc_random_flow"])])
        out[f"comparison_{dataset}"] = (caption(rows, title, speed=True), rows[list(columns)].rename(columns=columns))
    for method in ablation_methods(frame):
        title = ABLATION_TITLES.get(method, f"{method}: its variants")
        rows = frame[frame["method"] == method].sort_values(["variant", "k", *runs])
        if len(rows):
            columns = {"variant": "Variant", "preset": "Backbone", "k": "k", **runs,
                       **{k: METRIC_NAMES[k] for k in METRICS}, "gflops": "GFLOPs"}
            table = rows[list(columns)].rename(columns=columns).astype({"k": int})
            out[f"ablation_{method}"] = (caption(rows, title), table)
    rows = frame[frame["M"].notna()].sort_values(["preset", "M", *runs])
    if len(rows):
        columns = {"Method": "Method", "preset": "Backbone", "M": "M", **runs, **{k: METRIC_NAMES[k] for k in METRICS},
                   "gflops": "GFLOPs", "query_fraction": "Selected queries", "fps": "FPS", "speed": SPEED_COLUMN}
        table = rows[list(columns)].rename(columns=columns).astype({"M": int})
        out["memory_stt"] = (caption(rows, "STT over the memory length M (M = 0: PSPNet alone)", speed=True), table)
    seeds = seed_table(frame)
    if seeds is not None:
        out["seeds"] = (caption(frame[frame["configuration"].isin(seeds.attrs["configurations"])],
                                "Mean over seeds with their spread (min-max); a difference from the method's "
                                "default variant is marked 'inside the spread' where the two ranges overlap"),
                        seeds)
    costs = frame.drop_duplicates(["method", "preset", "variant", "M"]).sort_values(["method", "preset", "variant"])
    columns = {"Method": "Method", "preset": "Backbone", "params_m": "Params (M)", "gflops_key": "GFLOPs key",
               "gflops_nonkey": "GFLOPs non-key", "flop_resolution": "Resolution",
               **({"peak_mib": MEMORY_COLUMN} if costs["peak_mib"].notna().any() else {})}
    out["per_frame_cost"] = (caption(costs, "Per-frame cost (MPVSS supplementary Table III layout)", metrics=False),
                             costs[list(columns)].rename(columns=columns))
    return out


def seed_table(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Per configuration run with several seeds: the mean of mIoU and mVC8, their spread (lowest to
    highest seed) and the per-seed values; for a non-default variant, its mIoU difference from the
    method's default variant at the same schedule and training, marked when the two seed ranges
    overlap (a difference the seeds alone could make). None when no configuration has two seeds."""
    frame = frame.assign(Method=frame.apply(method_name, axis=1),
                         training=frame["training"].fillna("-").astype(str))
    keys = ["method", "preset", "variant", "schedule", "training", "random"]
    groups = frame.groupby(keys, sort=True, dropna=False)
    summary = groups.agg(Method=("Method", "first"), seeds=("seed", "nunique"), miou=("miou", "mean"),
                         miou_low=("miou", "min"), miou_high=("miou", "max"), mvc8=("mvc8", "mean"),
                         mvc8_low=("mvc8", "min"), mvc8_high=("mvc8", "max"),
                         per_seed=("miou", lambda v: " / ".join(f"{x:.2f}" for x in v)),
                         configurations=("configuration", lambda v: sorted(set(v)))).reset_index()
    summary = summary[summary["seeds"] > 1]
    if summary.empty:
        return None

    alike = ["method", "preset", "schedule", "training", "random"]
    defaults = {tuple(r[k] for k in alike): r for _, r in summary.iterrows()
                if is_default_variant(r["method"], r["variant"])}

    def versus_default(row: pd.Series) -> str:
        other = defaults.get(tuple(row[k] for k in alike))
        if other is None or is_default_variant(row["method"], row["variant"]):
            return "-"
        inside = row["miou_low"] <= other["miou_high"] and other["miou_low"] <= row["miou_high"]
        return f"{row['miou'] - other['miou']:+.2f}" + (" (inside the spread)" if inside else "")

    summary = summary.assign(
        spread=summary.apply(lambda r: f"{r['miou_low']:.2f}-{r['miou_high']:.2f}", axis=1),
        mvc8_spread=summary.apply(lambda r: f"{r['mvc8_low']:.2f}-{r['mvc8_high']:.2f}", axis=1),
        versus=summary.apply(versus_default, axis=1))
    columns = {"Method": "Method", "preset": "Backbone", "schedule": "Schedule", "seeds": "Seeds",
               "miou": "mIoU (mean)", "spread": "mIoU min-max", "per_seed": "mIoU per seed",
               "versus": "mIoU vs default variant", "mvc8": "mVC8 (mean)", "mvc8_spread": "mVC8 min-max"}
    table = summary[list(columns)].rename(columns=columns)
    table.attrs["configurations"] = [c for group in summary["configurations"] for c in group]
    return table


def _number(value: object, column: str) -> object:
    """Metrics with 2 decimals as the papers print them; costs with 3 significant digits or more."""
    if not isinstance(value, float):
        return value
    if math.isnan(value):
        return "-"
    if column.startswith(("GFLOPs", "Params")):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:.2f}"


def write_table(name: str, title: str, table: pd.DataFrame, out: Path, formats: tuple[str, ...]) -> list[Path]:
    """Write one table in each format; the caption goes above (Markdown), into \\caption (LaTeX)
    and nowhere in CSV, which stays machine-readable at full precision."""
    written = []
    printed = table.apply(lambda column: column.map(lambda value: _number(value, column.name)))
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        if fmt == "md":
            alignment = ["right" if n else "left" for n in numeric]
            markdown = printed.to_markdown(index=False, disable_numparse=True, colalign=alignment)
            path.write_text(f"**{title}**\n\n{markdown}\n")
        elif fmt == "tex":
            path.write_text(printed.to_latex(index=False, caption=title, label=f"tab:{name}", na_rep="-",
                                            column_format="".join("r" if n else "l" for n in numeric)))
        else:
            table.to_csv(path, index=False)
        written.append(path)
    return written


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by another with fewer or equal GFLOPs (x) and higher or equal accuracy (y)."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


_MARKERS = "osD^vP*Xh<>p"
# One hue per method, so that unrelated methods never look alike; presets of one method are shades of
# it, variants get markers (in the order of the method's variants, the default first).
_METHOD_COLOURS = {"perframe": "#333333", "copy": "#8c8c8c", "mpvss": "#1f77b4", "tfc": "#ff7f0e",
                   "dff": "#2ca02c", "accel": "#d62728", "stt": "#9467bd"}
_OTHER_COLOURS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _colour(method: str, preset_index: int) -> tuple[float, float, float]:
    """The method's hue; a lighter or darker shade for each further preset."""
    if method in _METHOD_COLOURS:
        base = matplotlib.colors.to_rgb(_METHOD_COLOURS[method])
    else:
        others = sorted(set(registered_methods()) - set(_METHOD_COLOURS))
        base = matplotlib.colors.to_rgb(_OTHER_COLOURS[others.index(method) % len(_OTHER_COLOURS)]
                                        if method in others else _OTHER_COLOURS[0])
    hue, lightness, saturation = colorsys.rgb_to_hls(*base)
    shift = (0.0, 0.25, -0.15, 0.4, -0.25)[preset_index % 5]
    return colorsys.hls_to_rgb(hue, min(0.85, max(0.1, lightness + shift)), saturation)


def _style(row: pd.Series, presets: dict[str, list[str]]) -> dict:
    """Colour by method (shaded by preset), marker by variant (by preset for a method without variants,
    such as perframe over three segmentors), dotted for random weights."""
    cls = registered_methods().get(row["method"])
    variants = list(cls.variants) if cls else [row["variant"]]
    preset_index = presets[row["method"]].index(row["preset"])
    if len(variants) > 1:
        marker = _MARKERS[variants.index(row["variant"]) % len(_MARKERS)] if row["variant"] in variants else "x"
    else:
        marker = _MARKERS[preset_index % len(_MARKERS)]
    return {"color": _colour(row["method"], preset_index), "marker": marker,
            "linestyle": ":" if row["random"] else "-"}


_REFERENCE_LINES = ("--", "-.", (0, (1, 1)), (0, (5, 1, 1, 1, 1, 1)))  # per-frame rows, one per preset


def _presets(frame: pd.DataFrame) -> dict[str, list[str]]:
    return {method: sorted(set(rows["preset"])) for method, rows in frame.groupby("method")}


def _honest_limits(axis: plt.Axes, values: pd.Series, min_span: float = 5.0) -> None:
    """Accuracy axes span at least ``min_span`` points, so that a 0.1-point wobble looks like one."""
    values = values.dropna()
    if values.empty:
        return
    low, high = float(values.min()), float(values.max())
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
        if high > 100:
            low, high = low - (high - 100), 100.0
    margin = 0.05 * (high - low)
    axis.set_ylim(low - margin, min(100.0 + margin, high + margin))


def _save(figure: plt.Figure, out: Path, name: str, legend_axis: plt.Axes | None = None) -> list[Path]:
    """PNG and PDF; the legend of ``legend_axis`` goes outside the plots, on the right."""
    if legend_axis is not None:
        handles, labels = legend_axis.get_legend_handles_labels()
        figure.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
    figure.tight_layout()
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:  # no creation date in the PDF: the same rows give the same bytes
        figure.savefig(path, dpi=150, bbox_inches="tight",
                       metadata={"CreationDate": None} if path.suffix == ".pdf" else None)
    plt.close(figure)
    return paths


def _series_name(rows: pd.DataFrame, runs: list[str] = ()) -> str:
    """``method (variant): preset``, the variant named even when it is the default, plus the run, and
    how many seeds a point averages when it averages several."""
    first = rows.iloc[0]
    run = "".join(", " + RUN_LEGENDS[column].format("-" if first[column] is None else first[column]) for column in runs)
    per_point = rows.groupby("schedule")["seed"].nunique(dropna=False)
    fewest, most = int(per_point.min()), int(per_point.max())
    spread = f", mean of {fewest if fewest == most else f'{fewest}-{most}'} seeds (bars: min-max)" if most > 1 else ""
    return f"{first['method']} ({first['variant']}): {first['preset']}{run}{spread}" + (RANDOM_MARK if first["random"] else "")


def _spread(rows: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per value of ``x``: the mean of ``y`` over the rows (several seeds of one configuration) and its
    distance to the minimum and the maximum, as error bars draw them."""
    grouped = rows.groupby(x, sort=True)[y]
    table = grouped.agg(["mean", "min", "max"]).reset_index()
    return table.assign(below=table["mean"] - table["min"], above=table["max"] - table["mean"])


def _plot_spread(axis: plt.Axes, rows: pd.DataFrame, x: str, y: str, label: str, style: dict) -> None:
    """A line through the means; with several seeds, min-max bars at each point."""
    points = _spread(rows, x, y)
    if rows["seed"].nunique(dropna=False) > 1:
        axis.errorbar(points[x], points["mean"], yerr=[points["below"], points["above"]], capsize=2, label=label,
                      **style)
    else:
        axis.plot(points[x], points["mean"], label=label, **style)


def scatter_figure(frame: pd.DataFrame, metric_y: str = "miou") -> plt.Figure:
    """mIoU against GFLOPs per frame (``miou``, the Pareto front of trained rows dashed) or mVC8 against
    mIoU (``mvc8``): one series per configuration, each point labelled with its interval or memory."""
    presets = _presets(frame)
    runs = [column for column in run_columns(frame) if column != "seed"]
    keys = ["method", "variant", "preset", "random", *runs]
    title = "mIoU against cost (Pareto front dashed)" if metric_y == "miou" else "Temporal consistency against accuracy"
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    x_column = "gflops" if metric_y == "miou" else "miou"
    for _, rows in frame.groupby(keys, sort=True, dropna=False):
        style = _style(rows.iloc[0], presets)
        style.pop("linestyle")
        if rows["random"].iloc[0]:
            style.update(facecolors="none", edgecolors=style.pop("color"))
        points = rows.groupby("schedule", sort=False)[[x_column, metric_y]].agg(["mean", "min", "max"])
        xs, ys = points[(x_column, "mean")], points[(metric_y, "mean")]
        axis.scatter(xs, ys, s=24, label=_series_name(rows, runs), **style)
        if rows["seed"].nunique(dropna=False) > 1:
            axis.errorbar(xs, ys, xerr=[xs - points[(x_column, "min")], points[(x_column, "max")] - xs],
                          yerr=[ys - points[(metric_y, "min")], points[(metric_y, "max")] - ys], fmt="none",
                          ecolor=style.get("color", style.get("edgecolors")), elinewidth=0.8, capsize=2)
        for schedule, x, y in zip(points.index, xs, ys):  # which interval (or memory length) each point is
            axis.annotate(schedule, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=5, alpha=0.8)
    if metric_y == "miou":  # random weights' accuracy is not a result: never on the front
        valid = frame[~frame["random"]].dropna(subset=["gflops", "miou"])
        front = pareto_front(list(zip(valid["gflops"], valid["miou"])))
        axis.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", linestyle="--",
                  linewidth=1, label="Pareto front")
        axis.set_xlabel("GFLOPs per frame (15-frame clip average)")
    else:
        axis.set_xlabel("mIoU (%)")
    axis.set_ylabel(f"{METRIC_NAMES[metric_y]} (%)")
    _honest_limits(axis, frame[metric_y])
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return figure


def accuracy_cost_figure(paths: list[Path], png: Path, labels: set[str] | None = None) -> list[Path]:
    """The mIoU-against-GFLOPs figure of the rows in ``paths`` (those labelled ``labels``, if given) as
    ``png`` and a PDF beside it: what ``bench run --figure`` writes."""
    frame = load_frame(paths)
    if labels is not None:
        frame = frame[frame["label"].isin(labels)]
    png.parent.mkdir(parents=True, exist_ok=True)
    figure = scatter_figure(frame, "miou")
    return _save(figure, png.parent, png.stem, legend_axis=figure.axes[0])


def _accuracy_panels(rows: pd.DataFrame, keys: list[str], x: str, xlabel: str, title: Callable[[str], str],
                     presets: dict[str, list[str]], runs: list[str],
                     figsize: tuple[float, float] = (11, 4.2)) -> tuple[plt.Figure, list[plt.Axes]]:
    """mIoU and mVC8 against ``x``, one series per group of ``keys`` (its spread over seeds drawn)."""
    figure, axes = plt.subplots(1, 2, figsize=figsize)
    for _, series in rows.groupby(keys, sort=True, dropna=False):
        series = series.sort_values(x)
        for axis, metric in zip(axes, ("miou", "mvc8")):
            _plot_spread(axis, series, x, metric, _series_name(series, runs), _style(series.iloc[0], presets))
    for axis, metric in zip(axes, ("miou", "mvc8")):
        axis.set(xlabel=xlabel, ylabel=f"{METRIC_NAMES[metric]} (%)", title=title(metric))
        _honest_limits(axis, rows[metric])
        axis.grid(alpha=0.3)
    return figure, list(axes)


def plot_all(frame: pd.DataFrame, out: Path, compare: tuple[str, str] | None = None) -> list[Path]:
    """Write every figure the rows can fill; returns the files written."""
    written = []
    presets = _presets(frame)
    # The interval figures show each method's default variant (the ablation tables have the rest).
    interval_rows = frame[frame["k"].notna() & frame.apply(lambda r: is_default_variant(r["method"], r["variant"]), axis=1)]
    # Seeds of one configuration are one series: their mean, with the spread drawn (the tables list each seed).
    runs = [column for column in run_columns(frame) if column != "seed"]
    keys = ["method", "variant", "preset", "random", *runs]
    series = list(interval_rows.groupby(keys, sort=True, dropna=False))
    devices = ", ".join(sorted(set(frame["fps_device"].dropna())))
    if series:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for (method, *_), rows in series:
            rows = rows.sort_values("k")
            style = _style(rows.iloc[0], presets)
            for axis, metric in zip(axes, ("miou", "mvc8")):
                if method == "perframe":  # the interval does not apply: a reference line (a band over seeds)
                    dashes = _REFERENCE_LINES[presets[method].index(rows["preset"].iloc[0]) % len(_REFERENCE_LINES)]
                    axis.axhline(rows[metric].mean(), linestyle=dashes, color=style["color"],
                                 label=f"{_series_name(rows, runs)} (every frame)")
                    if rows["seed"].nunique(dropna=False) > 1:
                        axis.axhspan(rows[metric].min(), rows[metric].max(), color=style["color"], alpha=0.12)
                else:
                    _plot_spread(axis, rows, "k", metric, _series_name(rows, runs), style)
        for axis, metric in zip(axes, ("miou", "mvc8")):
            axis.set_xlabel("key-frame interval k")
            axis.set_ylabel(f"{METRIC_NAMES[metric]} (%)")
            axis.set_title(f"{METRIC_NAMES[metric]} against the key-frame interval")
            _honest_limits(axis, interval_rows[metric])
            axis.grid(alpha=0.3)
        written += _save(figure, out, "accuracy_vs_interval", legend_axis=axes[0])

        figure, axis = plt.subplots(figsize=(6.5, 4.2))
        for _, rows in series:
            rows = rows.sort_values("k")
            _plot_spread(axis, rows, "k", "gflops", _series_name(rows, runs), _style(rows.iloc[0], presets))
        axis.set(xlabel="key-frame interval k", ylabel="GFLOPs per frame (15-frame clip average)",
                 title="Cost against the key-frame interval")
        axis.grid(alpha=0.3)
        written += _save(figure, out, "gflops_vs_interval", legend_axis=axis)

    for metric_y, name in (("miou", "accuracy_vs_gflops"), ("mvc8", "mvc8_vs_miou")):
        figure = scatter_figure(frame, metric_y)
        written += _save(figure, out, name, legend_axis=figure.axes[0])

    for method in ablation_methods(frame):  # every variant of the method against k
        rows_of = frame[(frame["method"] == method) & frame["k"].notna()]
        figure, axes = _accuracy_panels(rows_of, ["variant", "preset", "random", *runs], "k", "key-frame interval k",
                                        lambda metric, method=method: f"{ABLATION_TITLES.get(method, method)}: "
                                                                      f"{METRIC_NAMES[metric]}", presets, runs)
        written += _save(figure, out, f"ablation_{method}", legend_axis=axes[0])

    memory_rows = frame[frame["M"].notna()]
    if len(memory_rows):
        figure, axes = _accuracy_panels(memory_rows, ["method", "variant", "preset", "random", *runs], "M",
                                        "memory frames M (0 = PSPNet alone)",
                                        lambda metric: f"STT: {METRIC_NAMES[metric]} against M", presets, runs,
                                        figsize=(10, 4))
        for axis in axes:
            axis.legend(fontsize=8)
        written += _save(figure, out, "stt_memory")

    pair = compare or default_comparison(frame)
    if pair:
        rows = [frame[frame["label"] == label].iloc[0] for label in pair]
        classes = list(rows[0]["per_class_iou"])
        figure, axis = plt.subplots(figsize=(max(6.0, 0.35 * len(classes) + 2), 4.2))
        width = 0.4
        for offset, row in zip((-width / 2, width / 2), rows):
            values = [row["per_class_iou"].get(c) for c in classes]
            axis.bar([i + offset for i in range(len(classes))], [math.nan if v is None else v for v in values],
                     width, label=row["label"] + (RANDOM_MARK if row["random"] else ""))
        axis.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=7)
        axis.set(ylabel="IoU (%)", title="Per-class IoU")
        axis.legend(fontsize=8)
        written += _save(figure, out, "per_class_iou")
    if devices:
        (out / "figures.md").write_text(f"Figures made from {len(frame)} rows; FPS and latency measured on {devices}.\n")
        written.append(out / "figures.md")
    return written


def default_comparison(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The default MPVSS row (else another method's) at the largest interval, and the per-frame
    row of the same image segmentor (else the first per-frame row)."""
    baselines = frame[frame["method"] == "perframe"]
    others = frame[(frame["method"] != "perframe") & frame["k"].notna()]
    if baselines.empty or others.empty:
        return None
    preferred = others[(others["method"] == "mpvss") & others["variant"].map(lambda v: is_default_variant("mpvss", v))]
    chosen = (preferred if len(preferred) else others).sort_values("k").iloc[-1]
    same_segmentor = baselines[baselines["preset"] == chosen["segmentor_preset"]]
    baseline = (same_segmentor if len(same_segmentor) else baselines).iloc[0]
    return baseline["label"], chosen["label"]


def write_report(paths: list[Path], out: Path, formats: tuple[str, ...] = FORMATS,
                 compare: tuple[str, str] | None = None, html: bool = False,
                 shows: list[tuple[Path, dict]] = ()) -> list[Path]:
    """Every table and figure for the rows in ``paths``, written under ``out``; with ``html``, also
    ``report.html``, the page of :mod:`vssbench.benchmark.html`, inlining the ``bench show`` folders
    ``shows`` (each with its manifest)."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown table formats {sorted(unknown)}; expected some of {', '.join(FORMATS)}")
    frame = load_frame(paths)
    if compare:
        missing = [label for label in compare if label not in set(frame["label"])]
        if missing:
            raise ValueError(f"--compare: no finished row labelled {', '.join(missing)}; labels: "
                             f"{', '.join(sorted(set(frame['label'])))}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    filled = tables(frame)
    for name, (title, table) in filled.items():
        written += write_table(name, title, table, out, formats)
    figures = plot_all(frame, out, compare)
    written += figures
    if html:
        from vssbench.benchmark.html import write_page

        written.append(write_page(paths, frame, filled, figures, out, _number, list(shows)))
    return written
