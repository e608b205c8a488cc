"""The regression gate behind ``bench check``: result rows against a baseline, configuration by configuration.

Rows are matched by what defines their configuration (method, preset, variant, dataset,
split, videos, resolution, schedule), not by the configuration hash, which also covers the
checkpoint digest and so differs whenever weights are retrained. For each row of the run
that has a baseline row of its configuration:

* a row whose status is not ``ok`` is a regression;
* accuracy (mIoU, WIoU, mVC8, mVC16, and TC where the baseline row has it) may not drop by more
  than its tolerance, in points; a TC computed with a random RAFT is not compared;
* parameters and GFLOPs (key and non-key paths) may not change at all: they are
  properties of the architecture, so any change is a change of the method;
* where both rows record how their weights were trained (``checkpoint.training``), the
  training may not differ (data, split, iterations, seed, down the chain of checkpoints it
  started from, as far as both record it): a row trained three times as long is another
  experiment, not an improvement, and a changed recipe needs a new baseline;
* rows of random weights (``weights: random``) are not compared on accuracy, which they do not
  have, and are listed as such; their cost and speed are compared as any row's;
* the speed ratio against the per-frame run of the same image segmentor may not drop by
  more than its band (a fraction). Where both rows carry one, the paired ratio is compared
  (``cost.speed_vs_per_frame``: the method and its segmentor timed in alternation right
  after the row's pass, so a machine whose speed drifts during a sweep shifts both sides
  alike); otherwise the row's FPS over the FPS of the per-frame row of the same file. A
  ratio is compared, never an absolute speed, because both sides are measured on one
  machine in one run while the baseline may come from another machine.

Every row of the run is passed, regressed, new (the baseline has no such configuration) or
skipped with the reason (scored on other videos than the baseline's: ``--max-videos``, a split
holding other videos; the video selection is part of the configuration; or trained differently,
where both rows record their training: data, split, iterations, seed or thread count down the
chain of checkpoints, so that only like is compared with like). Baseline rows the run
lacks are listed; with ``require_all`` (the CI gate) each is a regression, so that a gate run
that silently computed fewer rows fails.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from vssbench.benchmark.results import declared_training, schedule_interval

ACCURACY = ("miou", "wiou", "mvc8", "mvc16", "tc")  # tc only where a row has it (--metrics tc)
COST = ("params_m", "gflops_key", "gflops_nonkey")
DEFAULT_TOLERANCES = {"miou": 0.5, "wiou": 0.5, "mvc8": 0.5, "mvc16": 0.5, "tc": 0.5, "speed": 0.3}


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``miou=0.5,speed=0.3``-style overrides of :data:`DEFAULT_TOLERANCES`."""
    tolerances = dict(DEFAULT_TOLERANCES)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not sep or name not in tolerances or number < 0:
            raise ValueError(f"--tolerance {item!r}: expected NAME=VALUE with NAME one of "
                             f"{', '.join(DEFAULT_TOLERANCES)} and a non-negative VALUE")
        tolerances[name] = number
    return tolerances


def row_key(row: dict, include_videos: bool = True) -> str:
    """What identifies a row's configuration across runs and machines."""
    names = ("method", "preset", "variant", "dataset", "split", "resolution", "schedule")
    fields = {k: row.get(k) for k in names + (("videos",) if include_videos else ())}
    return json.dumps(fields, sort_keys=True)


@dataclass(frozen=True)
class SpeedRatio:
    """A row's speed against its segmentor's per-frame run, measured the two ways rows record."""

    paired: float | None  # cost.speed_vs_per_frame: timed in alternation right after the row's pass
    from_rows: float | None  # the row's FPS over the per-frame row's, passes timed minutes apart


def speed_ratios(rows: list[dict]) -> dict[str, SpeedRatio]:
    """Row key -> its speed ratios against the per-frame run of its segmentor in the same rows."""
    per_frame = {}
    for row in rows:
        if row.get("method") == "perframe" and row.get("status") == "ok" and row.get("cost"):
            per_frame[_speed_reference_key(row, row["preset"])] = (row["cost"].get("fps") or {}).get("1")
    ratios = {}
    for row in rows:
        if row.get("status") != "ok" or not row.get("cost"):
            continue
        reference = per_frame.get(_speed_reference_key(row, row.get("segmentor_preset")))
        fps = (row["cost"].get("fps") or {}).get(str(schedule_interval(row["schedule"])))
        ratios[row_key(row)] = SpeedRatio(paired_ratio(row), fps / reference if reference and fps else None)
    return ratios


def paired_ratio(row: dict) -> float | None:
    """The row's paired speed ratio (``cost.speed_vs_per_frame``): 1 for a per-frame row, its own
    reference; None for a row written before paired timing."""
    if row.get("method") == "perframe":
        return 1.0
    return ((row.get("cost") or {}).get("speed_vs_per_frame") or {}).get("ratio")


def comparable_ratios(before: SpeedRatio | None, after: SpeedRatio | None) -> tuple[float, float, str] | None:
    """The two rows' ratios measured the same way, the paired ones first, and how; None if none are."""
    if before is None or after is None:
        return None
    if before.paired is not None and after.paired is not None:
        return before.paired, after.paired, "paired timing"
    if before.from_rows is not None and after.from_rows is not None:
        return before.from_rows, after.from_rows, "row FPS"
    return None


def _speed_reference_key(row: dict, segmentor_preset: str | None) -> str:
    return json.dumps([segmentor_preset, row["dataset"], row["split"], row.get("videos")], sort_keys=True)


@dataclass
class CheckResult:
    """Every row of the run lands in exactly one of ``passed``, ``regressed``, ``new`` and ``skipped``
    (with the reason); ``missing`` lists the baseline rows the run does not have, which are
    regressions only with ``require_all``. ``regressions`` names each failed comparison."""

    passed_rows: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    new_rows: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label, why it was not compared)
    missing: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    random_weights: list[str] = field(default_factory=list)  # rows compared on cost only

    @property
    def passed(self) -> bool:
        return not self.regressions

    @property
    def compared(self) -> int:
        return len(self.passed_rows) + len(self.regressed)


def check_report(result: CheckResult, file: str, baseline: str, require_all: bool) -> tuple[list[str], list[str]]:
    """``bench check``'s lines: what passed, was new, skipped or not compared (standard output) and each
    regression (standard error), then the counts and the verdict."""
    out = ([f"passed: {label}" for label in result.passed_rows]
           + [f"new (not in the baseline): {label}" for label in result.new_rows]
           + [f"skipped: {label}: {reason}" for label, reason in result.skipped]
           + [f"accuracy not compared: {label}" for label in result.random_weights])
    if result.missing and not require_all:
        out.append(f"not in this run ({len(result.missing)} baseline rows, not compared; --require-all fails on "
                   "them): " + ", ".join(result.missing[:5]) + (", ..." if len(result.missing) > 5 else ""))
    counts = (f"{len(result.passed_rows)} passed, {len(result.regressed)} regressed, {len(result.new_rows)} new, "
              f"{len(result.skipped)} skipped; {len(result.missing)} baseline rows not in this run")
    verdict = "passed" if result.passed else f"FAILED with {len(result.regressions)} regressions"
    out.append(f"bench check {file} against {baseline}: {counts}; {verdict}")
    return out, [f"REGRESSION {regression}" for regression in result.regressions]


def check(rows: list[dict], baseline: list[dict], tolerances: dict[str, float] | None = None,
          require_all: bool = False) -> CheckResult:
    """Compare ``rows`` with ``baseline``; every regression is named with its row and metric.

    Only the configurations the run has are compared; with ``require_all`` (the CI gate) a baseline
    row the run lacks, or scored on other videos, fails too. Raises ValueError when either side
    holds two finished rows of one configuration (say, from weights trained twice): which of them
    the other side should match is undefined.
    """
    tolerances = tolerances or DEFAULT_TOLERANCES
    for side, side_rows in (("results", rows), ("baseline", baseline)):
        _require_one_row_per_configuration(side, side_rows)
    expected_by_key = {row_key(r): r for r in baseline if r.get("status") == "ok"}
    expected_on_any_videos = {row_key(r, include_videos=False): r for r in expected_by_key.values()}
    current_ratios, baseline_ratios = speed_ratios(rows), speed_ratios(baseline)
    result = CheckResult()
    matched = set()
    for found in rows:
        label, key = found["label"], row_key(found)
        expected = expected_by_key.get(key)
        if expected is None:
            other = expected_on_any_videos.get(row_key(found, include_videos=False))
            if other is not None:
                result.skipped.append((label, f"scored on other videos than the baseline's ({_video_count(found)} "
                                              f"here, {_video_count(other)} there, or other names)"))
            else:
                result.new_rows.append(label)
            continue
        scored = scoring_difference(expected, found)
        if scored and found.get("status") == "ok":
            result.skipped.append((label, f"scored differently ({scored}): not like with like"))
            continue
        unlike = training_difference(_training(expected), _training(found))
        if unlike and found.get("status") == "ok":  # not matched: with require_all the baseline row is missing
            result.skipped.append((label, f"trained differently ({unlike}): not like with like"))
            continue
        matched.add(key)
        problems = _compare(expected, found, tolerances, baseline_ratios.get(key), current_ratios.get(key), result)
        result.regressions.extend(f"{label}: {problem}" for problem in problems)
        (result.regressed if problems else result.passed_rows).append(label)
    result.missing = [r["label"] for key, r in expected_by_key.items() if key not in matched]
    if require_all:
        result.regressions.extend(f"{label}: missing from the run (--require-all)" for label in result.missing)
    return result


def _compare(expected: dict, found: dict, tolerances: dict[str, float], before_ratio: SpeedRatio | None,
             after_ratio: SpeedRatio | None, result: CheckResult) -> list[str]:
    """What regressed from ``expected`` to ``found``, one message per metric."""
    if found.get("status") != "ok":
        return [f"status {found.get('status')}: {found.get('error')}"]
    problems = []
    random = [side for side, row in (("baseline", expected), ("results", found)) if row.get("weights") == "random"]
    if random:
        result.random_weights.append(f"{found['label']} (random weights in the {' and the '.join(random)})")
    for metric in () if random else ACCURACY:
        before, after = expected["metrics"].get(metric), found["metrics"].get(metric)
        if before is None or (metric == "tc" and (_random_flow(expected) or _random_flow(found))):
            continue
        if after is None or after < before - tolerances[metric]:
            shown = "none" if after is None else f"{after:.2f} ({after - before:+.2f})"
            problems.append(f"{metric} {before:.2f} -> {shown}, tolerance {tolerances[metric]:g} points")
    for metric in COST:
        before, after = (expected.get("cost") or {}).get(metric), (found.get("cost") or {}).get(metric)
        if before != after:
            problems.append(f"{metric} changed {before} -> {after} (must not change)")
    speed = comparable_ratios(before_ratio, after_ratio)
    if speed is not None and speed[1] < speed[0] * (1 - tolerances["speed"]):
        before, after, measured = speed
        problems.append(f"speed ratio vs per-frame {before:.3f} -> {after:.3f} ({measured}), "
                        f"band {tolerances['speed']:.0%}")
    return problems


TRAINING_FIELDS = ("dataset", "split", "iterations", "seed")
# Compared where both records have it (older checkpoints lack it): on a CPU the thread count changes the
# order of floating-point sums, and the same training with 1 thread instead of 2 moved tfc:tiny 2 points.
TRAINING_FIELDS_IF_RECORDED = ("threads",)


SCORING_FIELDS = ("miou_mode", "vc_protocol", "tc_protocol")  # the metrics' definitions a row records


def _random_flow(row: dict) -> bool:
    """Whether the row's TC was computed with a random RAFT (not compared, as random weights never are)."""
    return bool((((row.get("metrics") or {}).get("tc_protocol") or {}).get("flow") or {}).get("random"))


def scoring_difference(before: dict, after: dict) -> str | None:
    """How two rows' metric definitions differ (mIoU averaging, VC protocol), or None where they agree."""
    first, second = before.get("metrics") or {}, after.get("metrics") or {}
    changes = [f"{name} {first[name]} -> {second[name]}" for name in SCORING_FIELDS
               if name in first and name in second and first[name] != second[name]]
    return "; ".join(changes) or None


def training_difference(before: dict | None, after: dict | None, where: str = "") -> str | None:
    """How two checkpoints' training records differ, or None where they agree or either lacks one.

    Compares :data:`TRAINING_FIELDS`, when both record them the thread count and the recipe (naming the
    recipe values that differ), and the checkpoints each started from, recursively; ``where`` prefixes
    the fields of those ("started from 1: iterations ...").
    """
    if not before or not after:
        return None
    changes = [f"{where}{name} {before.get(name)} -> {after.get(name)}"
               for name in TRAINING_FIELDS if before.get(name) != after.get(name)]
    changes += [f"{where}{name} {before[name]} -> {after[name]}" for name in TRAINING_FIELDS_IF_RECORDED
                if name in before and name in after and before[name] != after[name]]
    if isinstance(before.get("recipe"), dict) and isinstance(after.get("recipe"), dict):
        old, new = before["recipe"], after["recipe"]
        differing = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if differing:
            changes.append(f"{where}recipe ({', '.join(differing)})")
    if "started_from" in before and "started_from" in after:
        starts_before, starts_after = before["started_from"], after["started_from"]
        if len(starts_before) != len(starts_after):
            changes.append(f"{where}started from {len(starts_before)} -> {len(starts_after)} checkpoints")
        else:
            changes.extend(filter(None, (training_difference(b, a, f"{where}started from {i + 1}: ")
                                         for i, (b, a) in enumerate(zip(starts_before, starts_after)))))
    return "; ".join(changes) or None


def _training(row: dict) -> dict | None:
    return declared_training(row)


def _video_count(row: dict) -> str:
    videos = row.get("videos")
    return str(videos["count"]) if videos else "unrecorded"


def _require_one_row_per_configuration(side: str, rows: list[dict]) -> None:
    seen: dict[str, dict] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        key = row_key(row)
        if key in seen:
            raise ValueError(f"two finished rows in the {side} share the configuration of {row.get('label')!r} "
                             f"(checkpoints {_checkpoint_digest(seen[key])} and {_checkpoint_digest(row)}); "
                             f"keep one per configuration")
        seen[key] = row


def _checkpoint_digest(row: dict) -> str:
    return ((row.get("checkpoint") or {}).get("sha256") or "none")[:12]
