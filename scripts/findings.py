"""The tables of reports/synthetic/findings.md, written from the committed result rows.

Each table of that file sits between ``<!-- table NAME -->`` and ``<!-- /table -->``; this script
rewrites every one from the rows named in :data:`TABLES`, so no number in them is typed by hand.
``--check`` writes nothing and exits 1 when the file differs from what the rows give (the test suite
runs it), and also when a decimal number in the prose is neither a value of one of the file's tables
nor the difference of two values in one of their rows or columns.

    python scripts/findings.py [--check] [--file reports/synthetic/findings.md]
"""

from __future__ import annotations

import argparse
import itertools
import re
import sys
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vssbench.benchmark.results import declared_training, load_rows  # noqa: E402
from vssbench.methods import tfc  # noqa: E402

FINDINGS = ROOT / "reports" / "synthetic" / "findings.md"
BASELINE = "results/baselines/synthetic-cpu.jsonl"
REFERENCE = "results/reference/"
INTERVALS = (1, 2, 5, 10)
MPVSS_VARIANTS = ("query-based-flow", "optical-flow", "query-for-pf", "query-learned", "query-random", "copy")
TFC_VARIANTS = ("sparse-msda-0.8", "sparse-msda-0.5", "sparse-msda-1.0", "linear-interp", "hard-interp",
                "fixed-interp", "feature-reuse", "flow-warp")
# The variants the committed Table 2 runs hold (`--variants all` when they were made); flow-warp-raft, RAFT as
# the paper's row, came after them and has not been run at these seeds.
TFC_RUN_VARIANTS = tuple(variant for variant in tfc.VARIANTS if variant != "flow-warp-raft")


@lru_cache(maxsize=None)
def _rows(file: str) -> tuple[dict, ...]:
    return tuple(load_rows(ROOT / file))


def metric(file: str, spec: str, name: str, k: int | None = None, memory: int | None = None,
           variant: str = "default", seed: int = 0, training: int | None = None) -> float:
    """One metric of the one row of ``file`` that matches; an error when none or several do."""
    method, _, preset = spec.partition(":")
    matches = []
    for row in _rows(file):
        schedule = row["schedule"]
        stage_iterations = (declared_training(row) or {}).get("iterations")
        if (row["status"] == "ok" and row["method"] == method and row["preset"] == preset
                and row["variant"] == variant and row["env"]["seed"] == seed
                and (k is None or schedule.get("key_interval") == k)
                and (memory is None or schedule.get("memory_frames") == memory)
                and (training is None or stage_iterations == training)):
            matches.append(row)
    if len(matches) != 1:
        raise LookupError(f"{file}: {len(matches)} rows of {spec} ({variant}) k={k} M={memory} seed={seed}")
    return matches[0]["metrics"][name]


def _f(value: float) -> str:
    return f"{value:.2f}"


def _signed(difference: float) -> str:
    """A difference with its sign, and no "-0.00"."""
    return f"{round(difference, 2) + 0.0:+.2f}"


def _per_seed_label(seeds: list[int]) -> str:
    return f"seed{'s' if len(seeds) > 1 else ''} {' / '.join(map(str, seeds))}"


def _signed_per_seed_and_mean(differences: list[float]) -> list[str]:
    """Two cells: each seed's difference, and their mean."""
    return [" / ".join(map(_signed, differences)), _signed(sum(differences) / len(differences))]


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def _name(spec: str, variant: str) -> str:
    return f"{spec} ({variant})" if variant != "default" else spec


def sweep() -> str:
    """Each method's default variant over the intervals (the committed baseline)."""
    specs = ["perframe:segformer-tiny", "copy:segformer-tiny", "tfc:tiny", "dff:tiny", "accel:tiny",
             "perframe:mask2former-tiny", "copy:mask2former-tiny", "mpvss:tiny"]
    variants = {"tfc:tiny": "sparse-msda-0.8", "mpvss:tiny": "query-based-flow"}
    body = []
    for spec in specs:
        variant = variants.get(spec, "default")
        ks = (1,) if spec.startswith("perframe") else INTERVALS
        cells = [_f(metric(BASELINE, spec, "miou", k, variant=variant)) if k in ks else "-" for k in INTERVALS]
        cells += [_f(metric(BASELINE, spec, "mvc8", k, variant=variant)) if k in ks else "-" for k in (1, 5, 10)]
        body.append([_name(spec, variant)] + cells)
    return _table(["method", "mIoU k=1", "k=2", "k=5", "k=10", "mVC8 k=1", "k=5", "k=10"], body)


def mpvss_variants() -> str:
    body = []
    for spec, variant in [("perframe:mask2former-tiny", "default"), ("copy:mask2former-tiny", "default")] + [
            ("mpvss:tiny", v) for v in MPVSS_VARIANTS]:
        ks = (1,) if spec.startswith("perframe") else INTERVALS
        cells = [_f(metric(BASELINE, spec, "miou", k, variant=variant)) if k in ks else "-" for k in INTERVALS]
        mvc_at = 1 if spec.startswith("perframe") else 5
        body.append([_name(spec, variant)] + cells + [_f(metric(BASELINE, spec, "mvc8", mvc_at, variant=variant))])
    return _table(["method (variant)", "k=1", "k=2", "k=5", "k=10", "mVC8 at k=5 (perframe: k=1)"], body)


def mpvss_seeds() -> str:
    seeds_file = REFERENCE + "mpvss-seeds-synthetic-cpu.jsonl"
    body = []
    for seed in (0, 1, 2):
        file = BASELINE if seed == 0 else seeds_file
        qbf = metric(file, "mpvss:tiny", "miou", 5, variant="query-based-flow", seed=seed)
        flow = metric(file, "mpvss:tiny", "miou", 5, variant="optical-flow", seed=seed)
        body.append([str(seed), _f(metric(file, "perframe:mask2former-tiny", "miou", 1, seed=seed)),
                     _f(metric(file, "copy:mask2former-tiny", "miou", 5, seed=seed)), _f(qbf), _f(flow),
                     f"{qbf - flow:+.2f}"])
    return _table(["seed", "perframe", "copy k=5", "query-based flow k=5", "optical flow k=5", "difference"], body)


def mpvss_stage3000() -> str:
    file = REFERENCE + "mpvss-stage3000-synthetic-cpu.jsonl"
    body = []
    for seed in (0, 1, 2):
        cells = [str(seed)]
        for variant in ("query-based-flow", "optical-flow"):
            cells.append(" / ".join(_f(metric(file, "mpvss:tiny", "miou", k, variant=variant, seed=seed))
                                    for k in (2, 5, 10)))
        at5 = [metric(file, "mpvss:tiny", "miou", 5, variant=v, seed=seed) for v in ("query-based-flow", "optical-flow")]
        cells.append(f"{at5[0] - at5[1]:+.2f}")
        body.append(cells)
    return _table(["seed", "query-based flow k=2 / 5 / 10", "optical flow k=2 / 5 / 10", "difference at k=5"], body)


def mpvss_stage9000() -> str:
    file = REFERENCE + "mpvss-stage9000-synthetic-cpu.jsonl"
    body = []
    for variant in ("query-based-flow", "optical-flow"):
        cells = [_f(metric(file, "mpvss:tiny", "miou", k, variant=variant)) for k in INTERVALS]
        cells.append(" / ".join(_f(metric(file, "mpvss:tiny", m, 5, variant=variant)) for m in ("mvc8", "mvc16")))
        body.append([variant] + cells)
    return _table(["variant, 9000 iterations, seed 0", "k=1", "k=2", "k=5", "k=10", "mVC8 / mVC16 at k=5"], body)


TABLE_3B_FILE = REFERENCE + "mpvss-table3b-synthetic-cpu.jsonl"
OLD_TABLE_3B_FILE = REFERENCE + "mpvss-table3b-old-synthetic-cpu.jsonl"  # the code of 68ce880 (before 66402c5)
TABLE_3B_VARIANTS = tuple(variant for variant in MPVSS_VARIANTS if variant != "copy")
# MPVSS Table 3b (Swin-T and Swin-B mIoU on VSPW, k = 5) for the variants it has.
TABLE_3B_PAPER = {"optical-flow": ("38.4", "52.1"), "query-random": ("38.1", "50.9"), "query-learned": ("39.2", "52.4"),
                  "query-for-pf": ("38.5", "52.3"), "query-based-flow": ("39.9", "52.9")}


def _seeds_in(file: str) -> list[int]:
    return sorted({row["env"]["seed"] for row in _rows(file) if row["status"] == "ok"})


def _over_seeds(file: str, spec: str, name: str, k: int, variant: str) -> str:
    """The value of the one seed, or the mean over the seeds with their range (an en dash, so that the
    prose check reads both ends)."""
    values = [metric(file, spec, name, k, variant=variant, seed=seed) for seed in _seeds_in(file)]
    if not values:
        raise LookupError(f"{file}: no rows")
    if len(values) == 1:
        return _f(values[0])
    return f"{sum(values) / len(values):.2f} ({min(values):.2f}\u2013{max(values):.2f})"


def _seeds_heading(file: str) -> str:
    seeds = _seeds_in(file)
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}: mean (min\u2013max)"


def old_against_new(old_file: str, new_file: str, rows: list[tuple], name: str,
                    headings: tuple[str, str] = ("old", "new")) -> str:
    """One metric per seed (those both files ran) of an older definition and a newer one, and new minus
    old: each seed's pair shares its segmentor checkpoint, so the difference is the definitions' alone
    (and the stage training's own noise). ``rows``: (label, spec, variant, interval[, the variant's
    name in the old file])."""
    seeds = sorted(set(_seeds_in(old_file)) & set(_seeds_in(new_file)))
    if not seeds:
        raise LookupError(f"{old_file} and {new_file} share no seed")
    body = []
    for label, spec, variant, k, *renamed in rows:
        old, new = ([metric(file, spec, name, k, variant=name_there, seed=seed) for seed in seeds]
                    for file, name_there in ((old_file, renamed[0] if renamed else variant), (new_file, variant)))
        differences = [b - a for a, b in zip(old, new)]
        body.append([label, " / ".join(map(_f, old)), " / ".join(map(_f, new)),
                     *_signed_per_seed_and_mean(differences)])
    per_seed = _per_seed_label(seeds)
    heading = {"miou": "mIoU", "mvc8": "mVC8"}.get(name, name)
    old, new = headings
    return _table([heading, f"{old}, {per_seed}", f"{new}, {per_seed}", f"{new} \u2212 {old}", "mean"], body)


def mpvss_table3b() -> str:
    """Table 3b's flow designs as the paper defines them (rebuilt 2026-12), mean and min-max over the seeds
    run, beside the definitions of 2026-11 over the same seeds and the paper's Swin-T / Swin-B column."""
    body = []
    for variant in TABLE_3B_VARIANTS:
        body.append([variant, " / ".join(TABLE_3B_PAPER[variant]),
                     *(_over_seeds(OLD_TABLE_3B_FILE, "mpvss:tiny", "miou", k, variant) for k in (5, 10)),
                     _over_seeds(TABLE_3B_FILE, "mpvss:tiny", "miou", 5, variant),
                     _over_seeds(TABLE_3B_FILE, "mpvss:tiny", "miou", 10, variant),
                     _over_seeds(TABLE_3B_FILE, "mpvss:tiny", "mvc8", 5, variant)])
    copy = "copy:mask2former-tiny"
    body.append([copy, "-", "-", "-", *(_over_seeds(TABLE_3B_FILE, copy, "miou", k, "default") for k in (5, 10)),
                 _over_seeds(TABLE_3B_FILE, copy, "mvc8", 5, "default")])
    perframe = "perframe:mask2former-tiny"
    body.append([f"{perframe} (k=1)", "-", "-", "-", _over_seeds(TABLE_3B_FILE, perframe, "miou", 1, "default"), "-",
                 _over_seeds(TABLE_3B_FILE, perframe, "mvc8", 1, "default")])
    return _table(["variant", "paper Swin-T / Swin-B (k=5)", f"old k=5, {_seeds_heading(OLD_TABLE_3B_FILE)}",
                   "old k=10", f"new k=5, {_seeds_heading(TABLE_3B_FILE)}", "new k=10", "new mVC8 k=5"], body)


def mpvss_table3b_old_new() -> str:
    return old_against_new(OLD_TABLE_3B_FILE, TABLE_3B_FILE,
                           [(f"{variant} k={k}", "mpvss:tiny", variant, k)
                            for k in (5, 10) for variant in TABLE_3B_VARIANTS],
                           "miou")


TFC_TABLE_2_FILE = REFERENCE + "tfc-table2-synthetic-cpu.jsonl"  # the recipe's loss weights applied
# The code of bf6d5c0: the equations as printed, but the loss terms summed unweighted, Eq. 9's attention alone
# the default (the encoder layer was sparse-msda-0.8-layer) and synthetic pairs 0-3 frames apart.
TFC_SUMMED_FILE = REFERENCE + "tfc-table2-summed-synthetic-cpu.jsonl"
TFC_OLD_FILE = REFERENCE + "tfc-table2-old-synthetic-cpu.jsonl"  # the code of 68ce880 (before 9e5b6fe)
TFC_NAMES_IN_SUMMED = {"sparse-msda-0.8": "sparse-msda-0.8-layer", "sparse-msda-0.8-attention": "sparse-msda-0.8"}
# TFC Table 2 (MiT-B0 on VSPW, interval 4): mIoU, mVC8, mVC16 of the rows our variants stand for.
# sparse-msda-0.8 is the full method (the table's x^2 / with-focal-loss / interval-4 row).
TFC_TABLE_2_PAPER = {"sparse-msda-0.8": ("32.9", "85.3", "80.0"), "sparse-msda-0.5": ("31.9", "84.3", "79.0"),
                     "sparse-msda-1.0": ("33.8", "79.0", "74.3"), "linear-interp": ("32.0", "85.0", "79.3"),
                     "hard-interp": ("32.0", "83.7", "78.0"), "fixed-interp": ("31.0", "85.9", "80.5"),
                     "feature-reuse": ("31.5", "84.3", "78.7"), "flow-warp": ("32.7", "81.0", "75.0")}


def tfc_table2() -> str:
    """TFC Table 2's variants trained as their recipe says (the loss weights applied, the encoder layer the
    default), mean and min-max over the seeds run, beside the same variants from the code of bf6d5c0 on the
    same seeds (under their names there) and the paper's B0."""
    file, before = TFC_TABLE_2_FILE, TFC_SUMMED_FILE
    body = [["perframe:segformer-tiny (k=1)", "-", "-", "-",
             _over_seeds(file, "perframe:segformer-tiny", "miou", 1, "default"), "-",
             _over_seeds(file, "perframe:segformer-tiny", "mvc8", 1, "default")],
            ["copy:segformer-tiny", "-", "-", "-", "-"] +
            [_over_seeds(file, "copy:segformer-tiny", m, 4, "default") for m in ("miou", "mvc8")]]
    for variant in TFC_RUN_VARIANTS:  # every variant the runs hold, as `--variants all` ran them
        there = TFC_NAMES_IN_SUMMED.get(variant, variant)
        body.append([variant, " / ".join(TFC_TABLE_2_PAPER.get(variant, ("-",))),
                     *(_over_seeds(before, "tfc:tiny", m, 4, there) for m in ("miou", "mvc8")),
                     _over_seeds(file, "tfc:tiny", "miou", 1, variant)] +
                    [_over_seeds(file, "tfc:tiny", m, 4, variant) for m in ("miou", "mvc8")])
    return _table(["variant", "paper B0 mIoU / mVC8 / mVC16 (k=4)",
                   f"bf6d5c0 mIoU k=4, {_seeds_heading(before)}", "bf6d5c0 mVC8 k=4",
                   f"now mIoU k=1, {_seeds_heading(file)}", "now mIoU k=4", "now mVC8 k=4"], body)


def _differences(file: str, pairs: list[tuple[str, str]], spec: str, k: int) -> str:
    """Per seed and on the mean, mIoU and mVC8 of one variant minus another's (same file, same interval)."""
    seeds = _seeds_in(file)
    body = []
    for first, second in pairs:
        cells = [f"{first} \u2212 {second}"]
        for name in ("miou", "mvc8"):
            differences = [metric(file, spec, name, k, variant=first, seed=seed)
                           - metric(file, spec, name, k, variant=second, seed=seed) for seed in seeds]
            cells += _signed_per_seed_and_mean(differences)
        body.append(cells)
    per_seed = _per_seed_label(seeds)
    return _table(["comparison", f"mIoU k={k}, {per_seed}", "mean", f"mVC8 k={k}, {per_seed}", "mean"], body)


def tfc_table2_differences() -> str:
    pairs = [("sparse-msda-0.8", "linear-interp"), ("sparse-msda-1.0", "sparse-msda-0.8"),
             ("sparse-msda-0.5", "sparse-msda-0.8"), ("sparse-msda-0.8", "feature-reuse"),
             ("hard-interp", "linear-interp"), ("fixed-interp", "linear-interp"), ("flow-warp", "feature-reuse"),
             ("sparse-msda-0.8-cell-target", "sparse-msda-0.8"), ("sparse-msda-0.8-attention", "sparse-msda-0.8")]
    return _differences(TFC_TABLE_2_FILE, pairs, "tfc:tiny", 4)


def tfc_table2_old_new() -> str:
    """The definitions of 2026-11 (68ce880) against the equations as printed (bf6d5c0), per seed."""
    return old_against_new(TFC_OLD_FILE, TFC_SUMMED_FILE,
                           [(f"{variant} k=4", "tfc:tiny", variant, 4) for variant in TFC_VARIANTS], "miou")


def tfc_table2_weighted() -> str:
    """bf6d5c0 (terms summed, pairs 0-3) against this code (the recipe's weights, pairs 1-3), per seed, each
    variant under its name in either file."""
    return old_against_new(TFC_SUMMED_FILE, TFC_TABLE_2_FILE,
                           [(f"{variant} k=4", "tfc:tiny", variant, 4, TFC_NAMES_IN_SUMMED.get(variant, variant))
                            for variant in TFC_RUN_VARIANTS], "miou", headings=("bf6d5c0", "now"))


ACCEL_SEEDS_FILE = REFERENCE + "dff-accel-seeds-synthetic-cpu.jsonl"
OLD_ACCEL_SEEDS_FILE = REFERENCE + "accel-old-seeds-synthetic-cpu.jsonl"  # the code of 68ce880 (before 5dfea6d)


def dff_accel_seeds() -> str:
    """DFF and Accel over the intervals, mean and min-max over the seeds run, and Accel with the definitions
    of 2026-11 over the same seeds (key frames then fused both branches, training one direct warp)."""
    body = []
    for label, file, spec in [("perframe:segformer-tiny", ACCEL_SEEDS_FILE, "perframe:segformer-tiny"),
                              ("copy:segformer-tiny", ACCEL_SEEDS_FILE, "copy:segformer-tiny"),
                              ("dff:tiny", ACCEL_SEEDS_FILE, "dff:tiny"),
                              ("accel:tiny", ACCEL_SEEDS_FILE, "accel:tiny"),
                              ("accel:tiny, definitions of 2026-11", OLD_ACCEL_SEEDS_FILE, "accel:tiny"),
                              ("perframe:pspnet-tiny (the old runs' update branch)", OLD_ACCEL_SEEDS_FILE,
                               "perframe:pspnet-tiny")]:
        ks = (1,) if spec.startswith("perframe") else INTERVALS
        body.append([label] + [_over_seeds(file, spec, "miou", k, "default") if k in ks else "-" for k in INTERVALS]
                    + [_over_seeds(file, spec, "mvc8", 5 if len(ks) > 1 else 1, "default")])
    return _table(["method", f"mIoU k=1, {_seeds_heading(ACCEL_SEEDS_FILE)}", "k=2", "k=5", "k=10",
                   "mVC8 k=5 (perframe: k=1)"], body)


def accel_old_new() -> str:
    return old_against_new(OLD_ACCEL_SEEDS_FILE, ACCEL_SEEDS_FILE,
                           [(f"accel:tiny k={k}", "accel:tiny", "default", k) for k in INTERVALS], "miou")


def tfc_variants() -> str:
    file = REFERENCE + "tfc-synthetic-cpu.jsonl"
    body = [["perframe:segformer-tiny", _f(metric(file, "perframe:segformer-tiny", "miou", 1)), "-",
             _f(metric(file, "perframe:segformer-tiny", "mvc8", 1)) + " (k=1)",
             _f(metric(file, "perframe:segformer-tiny", "mvc16", 1)) + " (k=1)"],
            ["copy:segformer-tiny", _f(metric(file, "copy:segformer-tiny", "miou", 1))] +
            [_f(metric(file, "copy:segformer-tiny", m, 4)) for m in ("miou", "mvc8", "mvc16")]]
    for variant in TFC_VARIANTS:
        body.append([_name("tfc:tiny", variant), _f(metric(file, "tfc:tiny", "miou", 1, variant=variant))] +
                    [_f(metric(file, "tfc:tiny", m, 4, variant=variant)) for m in ("miou", "mvc8", "mvc16")])
    return _table(["method (variant)", "mIoU k=1", "mIoU k=4", "mVC8 k=4", "mVC16 k=4"], body)


def tfc_consistency() -> str:
    with_file = REFERENCE + "tfc-synthetic-cpu.jsonl"
    without_file = REFERENCE + "tfc-without-consistency-synthetic-cpu.jsonl"

    def cell(file: str, spec: str, variant: str) -> str:
        return (f"{_f(metric(file, spec, 'miou', 1, variant=variant))} / {_f(metric(file, spec, 'miou', 4, variant=variant))}"
                f", {_f(metric(file, spec, 'mvc8', 4, variant=variant))} / {_f(metric(file, spec, 'mvc16', 4, variant=variant))}")

    body = [[variant, cell(with_file, "tfc:tiny", variant), cell(without_file, "tfc-no-consistency:tiny", variant)]
            for variant in ("sparse-msda-0.8", "linear-interp")]
    return _table(["variant", "with Eq. 12: mIoU k=1 / k=4, mVC8 / mVC16 k=4", "without"], body)


def stt_memory() -> str:
    memories = range(8)
    body = [[name] + [_f(metric(BASELINE, "stt:tiny", key, memory=m)) for m in memories]
            for name, key in (("mIoU", "miou"), ("mVC8", "mvc8"), ("mVC16", "mvc16"))]
    return _table(["M", "0 (= PSPNet)"] + [str(m) for m in memories][1:], body)


def longer_stages() -> str:
    file = REFERENCE + "stage1800-synthetic-cpu.jsonl"
    rows = [("tfc:tiny", "sparse-msda-0.8", {"k": 1}, "k=1"), ("tfc:tiny", "sparse-msda-0.8", {"k": 4}, "k=4"),
            ("stt:tiny", "default", {"memory": 0}, "M=0"), ("stt:tiny", "default", {"memory": 7}, "M=7")]
    body = [[_name(spec, variant), where] + [_f(metric(file, spec, m, variant=variant, **select))
                                             for m in ("miou", "mvc8", "mvc16")]
            for spec, variant, select, where in rows]
    return _table(["method, stage 1800 iterations", "schedule", "mIoU", "mVC8", "mVC16"], body)


def noisy() -> str:
    file = REFERENCE + "synthetic-noisy-cpu.jsonl"
    rows = [("perframe:segformer-tiny", "default", {"k": 1}), ("copy:segformer-tiny", "default", {"k": 4}),
            ("tfc:tiny", "sparse-msda-0.8", {"k": 4}), ("tfc:tiny", "feature-reuse", {"k": 4}),
            ("perframe:pspnet-tiny", "default", {"k": 1}), ("stt:tiny", "default", {"memory": 7}),
            ("perframe:mask2former-tiny", "default", {"k": 1}), ("copy:mask2former-tiny", "default", {"k": 5}),
            ("mpvss:tiny", "query-based-flow", {"k": 5}), ("mpvss:tiny", "optical-flow", {"k": 5}),
            ("mpvss:tiny", "query-based-flow", {"k": 10}), ("mpvss:tiny", "optical-flow", {"k": 10})]
    body = []
    for spec, variant, select in rows:
        where = f"k={select['k']}" if "k" in select else f"M={select['memory']}"
        body.append([_name(spec, variant), where] + [_f(metric(file, spec, m, variant=variant, **select))
                                                     for m in ("miou", "mvc8", "mvc16")])
    return _table(["method", "schedule", "mIoU", "mVC8", "mVC16"], body)


TABLES: dict[str, Callable[[], str]] = {
    "sweep": sweep, "mpvss-variants": mpvss_variants, "mpvss-table3b": mpvss_table3b, "mpvss-seeds": mpvss_seeds,
    "mpvss-stage3000": mpvss_stage3000, "mpvss-stage9000": mpvss_stage9000, "tfc-variants": tfc_variants,
    "tfc-consistency": tfc_consistency, "tfc-table2": tfc_table2, "dff-accel-seeds": dff_accel_seeds,
    "mpvss-table3b-old-new": mpvss_table3b_old_new, "tfc-table2-old-new": tfc_table2_old_new,
    "accel-old-new": accel_old_new, "tfc-table2-differences": tfc_table2_differences,
    "tfc-table2-weighted": tfc_table2_weighted,
    "stt-memory": stt_memory, "longer-stages": longer_stages, "noisy": noisy,
}
_BLOCK = re.compile(r"(<!-- table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /table -->)", re.S)


def render(text: str) -> str:
    """``text`` with every marked table rewritten from the rows."""

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            raise KeyError(f"findings.md marks a table {name!r} that scripts/findings.py does not define")
        return match.group(1) + TABLES[name]() + match.group(4)

    return _BLOCK.sub(replace, text)


_NUMBER = re.compile(r"(?<![\w.\-+/=])[+-]?\d+\.\d+(?![\w.]*\d)")


def _table_groups(text: str) -> tuple[set[float], list[list[float]]]:
    """Every value of the Markdown tables in ``text``, and the groups whose members may be compared:
    each table row, and each column (by cell and by position inside a cell such as "85.89 / 83.42")."""
    values: set[float] = set()
    groups: list[list[float]] = []
    columns: dict[tuple[int, int], list[float]] = {}
    for line in text.splitlines() + [""]:
        if not line.startswith("|"):
            groups += columns.values()
            columns = {}
            continue
        row = []
        for column, cell in enumerate(line.strip("|").split("|")):
            for position, token in enumerate(_NUMBER.findall(f" {cell} ")):
                number = abs(float(token))
                row.append(number)
                columns.setdefault((column, position), []).append(number)
        values.update(row)
        groups.append(row)
    return values, groups


def unsupported_numbers(text: str) -> list[str]:
    """Decimal numbers of the prose that are neither a value of a table in ``text`` nor the difference
    of two values of one table row or column, at the number's own precision. Code spans and tables
    are not prose."""
    values, groups = _table_groups(text)
    prose = "\n".join(line for line in text.splitlines() if not line.startswith("|") and not line.startswith("<!--"))
    prose = re.sub(r"`[^`]*`", "", prose)
    unsupported = []
    for token in _NUMBER.findall(prose):
        number = abs(float(token))
        tolerance = 10 ** -len(token.split(".")[1]) / 2 + 0.006  # the table values are rounded to 0.01 too
        if any(abs(v - number) <= tolerance for v in values):
            continue
        if any(abs(abs(a - b) - number) <= tolerance for group in groups for a, b in itertools.combinations(group, 2)):
            continue
        unsupported.append(token)
    return unsupported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file is not up to date")
    parser.add_argument("--file", type=Path, default=FINDINGS)
    args = parser.parse_args(argv)
    text = args.file.read_text()
    rendered = render(text)
    unmarked = sorted(set(TABLES) - {match["name"] for match in _BLOCK.finditer(text)})
    if unmarked:
        print(f"{args.file}: tables scripts/findings.py defines but the file does not mark: {', '.join(unmarked)}",
              file=sys.stderr)
    unsupported = unsupported_numbers(rendered)
    if unsupported:
        print(f"{args.file}: numbers in the prose found in no table: {', '.join(unsupported)}", file=sys.stderr)
    if args.check:
        if rendered != text:
            print(f"{args.file}: tables differ from the rows; run python scripts/findings.py", file=sys.stderr)
            return 1
        return 1 if unsupported or unmarked else 0
    if rendered != text:
        args.file.write_text(rendered)
        print(f"rewrote the tables of {args.file}")
    return 1 if unsupported or unmarked else 0


if __name__ == "__main__":
    sys.exit(main())
