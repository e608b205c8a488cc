import copy
import json
import math

import pandas as pd
import pytest
from PIL import Image

from vssbench.benchmark.regression import check, parse_tolerances
from vssbench.benchmark.report import load_frame, pareto_front, training_text, write_report
from vssbench.benchmark.results import load_rows, write_rows_atomically
from vssbench.cli import main

CLASSES = ("sky", "road", "car")


def _row(method: str, preset: str, k: int | None = None, variant: str = "default", miou: float = 80.0,
         mvc8: float = 95.0, gflops: float = 1.0, fps: float = 10.0, memory: int | None = None,
         segmentor: str | None = None) -> dict:
    schedule = {"type": "memory", "memory_frames": memory} if memory is not None else \
        {"type": "interval", "key_interval": k, "offset": 0}
    interval = str(k or 1)
    suffix = f"m{memory}" if memory is not None else f"k{k}"
    return {
        "schema": "vssbench.result/1", "label": f"{method}_{preset}{'' if variant == 'default' else '_' + variant}_{suffix}",
        "method": method, "preset": preset, "variant": variant, "dataset": "synthetic", "split": "val",
        "resolution": [64, 96], "segmentor_preset": segmentor or preset, "schedule": schedule, "status": "ok",
        "error": None,
        "metrics": {"miou": miou, "wiou": miou + 5, "mvc8": mvc8, "mvc16": mvc8 - 1, "miou_mode": "vspw",
                    "vc_protocol": "vspw", "per_class_iou": dict(zip(CLASSES, (miou, miou - 10, None)))},
        "cost": {"params_m": 3.75, "gflops_key": gflops, "gflops_nonkey": gflops / 2, "gflops_avg": {interval: gflops},
                 "flop_resolution": [64, 96], "fps": {interval: fps}, "device": "CPU: test"},
        "config_hash": f"{method}{preset}{variant}{suffix}",
    }


ROWS = [
    _row("perframe", "segformer-tiny", 1, miou=90.0, mvc8=98.0, gflops=2.0, fps=10.0),
    _row("copy", "segformer-tiny", 1, miou=90.0, mvc8=98.0, gflops=2.0, fps=10.0),
    _row("copy", "segformer-tiny", 5, miou=70.0, mvc8=94.0, gflops=0.4, fps=50.0),
    _row("mpvss", "tiny", 1, variant="query-based-flow", miou=88.0, gflops=3.0, fps=8.0, segmentor="mask2former-tiny"),
    _row("mpvss", "tiny", 5, variant="query-based-flow", miou=84.0, gflops=1.5, fps=20.0, segmentor="mask2former-tiny"),
    _row("mpvss", "tiny", 5, variant="copy", miou=66.0, gflops=0.6, fps=40.0, segmentor="mask2former-tiny"),
    _row("perframe", "mask2former-tiny", 1, miou=89.0, gflops=3.0, fps=9.0),
    _row("stt", "tiny", memory=0, miou=85.0, mvc8=96.0, gflops=1.0, fps=12.0, segmentor="pspnet-tiny"),
    _row("stt", "tiny", memory=7, miou=85.5, mvc8=97.0, gflops=1.1, fps=8.0, segmentor="pspnet-tiny"),
]


@pytest.fixture
def rows_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_rows_atomically(path, ROWS)
    return path


def test_pareto_front_keeps_the_points_no_cheaper_point_beats():
    points = [(1.0, 70.0), (2.0, 90.0), (1.5, 65.0), (3.0, 88.0), (0.5, 60.0), (2.0, 85.0)]
    assert pareto_front(points) == [(0.5, 60.0), (1.0, 70.0), (2.0, 90.0)]


def test_report_writes_every_table_in_three_formats_and_every_figure(rows_file, tmp_path):
    out = tmp_path / "report"
    written = {p.name for p in write_report([rows_file], out)}
    for table in ("comparison_synthetic", "ablation_mpvss", "memory_stt", "per_frame_cost"):
        assert {f"{table}.md", f"{table}.tex", f"{table}.csv"} <= written
    for figure in ("accuracy_vs_interval", "gflops_vs_interval", "accuracy_vs_gflops", "mvc8_vs_miou",
                   "stt_memory", "per_class_iou"):
        assert {f"{figure}.png", f"{figure}.pdf"} <= written
        with Image.open(out / f"{figure}.png") as image:
            assert image.width > 400 and image.height > 300
    assert "ablation_tfc.md" not in written  # no TFC rows


def test_report_tables_hold_the_rows_values_and_name_the_fps_device(rows_file, tmp_path):
    out = tmp_path / "report"
    write_report([rows_file], out)
    comparison = pd.read_csv(out / "comparison_synthetic.csv")
    mpvss = comparison[(comparison["Method"] == "mpvss") & (comparison["Schedule"] == "k=5")]
    assert mpvss[["mIoU", "WIoU", "mVC8", "GFLOPs", "FPS"]].values.tolist() == [[84.0, 89.0, 95.0, 1.5, 20.0]]
    assert "mpvss (copy)" in set(comparison["Method"])  # a non-default variant is named
    markdown = (out / "comparison_synthetic.md").read_text()
    assert "FPS on CPU: test" in markdown and "mIoU mode vspw, VC protocol vspw" in markdown
    assert "\\caption{" in (out / "ablation_mpvss.tex").read_text()
    memory = pd.read_csv(out / "memory_stt.csv")
    assert memory["M"].tolist() == [0, 7] and memory["mVC8"].tolist() == [96.0, 97.0]


def test_report_shows_the_paired_speed_ratio_where_rows_carry_one(tmp_path):
    rows = copy.deepcopy(ROWS)
    rows[4]["cost"]["speed_vs_per_frame"] = {"ratio": 1.4, "rounds": [1.4] * 5, "reference": "perframe:x"}
    path = tmp_path / "rows.jsonl"
    write_rows_atomically(path, rows)
    write_report([path], tmp_path / "r", formats=("csv", "md"))
    speed = pd.read_csv(tmp_path / "r" / "comparison_synthetic.csv").set_index(["Method", "Backbone", "Schedule"])[
        "Speed vs per-frame"]
    assert speed[("mpvss", "tiny", "k=5")] == 1.4
    assert speed[("perframe", "segformer-tiny", "k=1")] == 1.0  # a per-frame row is its own reference
    assert math.isnan(speed[("copy", "segformer-tiny", "k=5")])  # a row from before paired timing has none
    assert "timed in alternation" in (tmp_path / "r" / "comparison_synthetic.md").read_text()


def test_report_keeps_runs_of_one_configuration_apart_by_seed_and_training(tmp_path):
    """Rows of one configuration from several runs (a seed study, a longer stage schedule) get
    a seed and a training column, and their own legend entries; a single run gets neither."""
    def trained(iterations: int, seed: int) -> dict:
        row = _row("mpvss", "tiny", 5, variant="query-based-flow", miou=80.0 + seed + iterations / 1000,
                   segmentor="mask2former-tiny")
        row["env"] = {"seed": seed}
        row["checkpoint"] = {"path": "a.pt", "sha256": "a" * 64, "training": {
            "iterations": iterations, "seed": seed, "started_from": [{"iterations": 1800, "started_from": []}]}}
        return row

    rows_path = tmp_path / "rows.jsonl"
    write_rows_atomically(rows_path, [trained(1000, 0), trained(3000, 0), trained(1000, 1)])
    write_report([rows_path], tmp_path / "r", formats=("csv",))
    table = pd.read_csv(tmp_path / "r" / "ablation_mpvss.csv")
    assert table[["k", "Seed", "Training (iterations)", "mIoU"]].values.tolist() == [
        [5, 0, "1000 from 1800", 81.0], [5, 0, "3000 from 1800", 83.0], [5, 1, "1000 from 1800", 82.0]]
    segmentor = _row("perframe", "mask2former-tiny", 1)  # another configuration, trained on another schedule
    segmentor["checkpoint"] = {"path": "b.pt", "sha256": "b" * 64, "training": {"iterations": 1800, "seed": 0}}
    single = tmp_path / "single.jsonl"
    write_rows_atomically(single, [trained(1000, 0), segmentor])
    write_report([single], tmp_path / "s", formats=("md",))
    markdown = (tmp_path / "s" / "ablation_mpvss.md").read_text()
    assert "| query-based-flow | tiny       |   5 |" in markdown  # k as an integer
    assert not any(column in (tmp_path / "s" / name).read_text() for column in ("Seed", "Training")
                   for name in ("ablation_mpvss.md", "comparison_synthetic.md"))
    assert training_text({"iterations": 1000, "started_from": [
        {"iterations": 1000, "started_from": [{"iterations": 1800}]}, {"iterations": 1800}]}) == "1000 from (1000 from 1800), 1800"


def test_report_compare_names_an_unknown_label(rows_file, tmp_path, capsys):
    assert main(["report", str(rows_file), "--out", str(tmp_path / "r"), "--compare", "copy_segformer-tiny_k5,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_check_passes_on_the_baseline_against_itself(rows_file, capsys):
    assert main(["check", str(rows_file), "--baseline", str(rows_file)]) == 0
    assert f"{len(ROWS)} passed, 0 regressed, 0 new, 0 skipped; 0 baseline rows not in this run; passed" in capsys.readouterr().out


def test_check_fails_naming_row_and_metric_when_the_baseline_miou_is_raised_by_5_points(rows_file, tmp_path, capsys):
    baseline = copy.deepcopy(ROWS)
    baseline[4]["metrics"]["miou"] += 5
    path = tmp_path / "baseline.jsonl"
    write_rows_atomically(path, baseline)
    assert main(["check", str(rows_file), "--baseline", str(path)]) == 1
    err = capsys.readouterr().err
    assert "mpvss_tiny_query-based-flow_k5: miou 89.00 -> 84.00 (-5.00)" in err
    assert err.count("REGRESSION") == 1


def test_check_tolerates_accuracy_drops_within_tolerance_but_no_cost_change():
    current = copy.deepcopy(ROWS)
    current[2]["metrics"]["mvc8"] -= 0.4
    assert check(current, ROWS).passed
    current[2]["cost"]["gflops_key"] += 0.001
    (regression,) = check(current, ROWS).regressions
    assert regression.startswith("copy_segformer-tiny_k5: gflops_key changed")


def test_check_compares_speed_as_a_ratio_to_the_per_frame_run_of_the_same_file():
    current = copy.deepcopy(ROWS)
    for row in current:  # a machine twice as slow: every ratio is unchanged
        row["cost"]["fps"] = {k: v / 2 for k, v in row["cost"]["fps"].items()}
    assert check(current, ROWS).passed
    current[2]["cost"]["fps"]["5"] /= 2  # copy k=5 alone halves: its ratio drops by 50%
    (regression,) = check(current, ROWS).regressions
    assert regression.startswith("copy_segformer-tiny_k5: speed ratio vs per-frame 5.000 -> 2.500")


def test_check_compares_the_paired_speed_ratio_where_both_rows_carry_one():
    baseline, current = copy.deepcopy(ROWS), copy.deepcopy(ROWS)
    for row in baseline + current:
        if row["method"] != "perframe":
            row["cost"]["speed_vs_per_frame"] = {"ratio": 2.0, "rounds": [2.0] * 5, "reference": "perframe:x"}
    current[2]["cost"]["fps"]["5"] /= 2  # its pass ran on a slow stretch of a shared machine: FPS ratio halves,
    assert check(current, baseline).passed  # but its segmentor, timed in alternation with it, slowed alike
    current[2]["cost"]["speed_vs_per_frame"]["ratio"] = 1.2
    (regression,) = check(current, baseline).regressions
    assert regression == "copy_segformer-tiny_k5: speed ratio vs per-frame 2.000 -> 1.200 (paired timing), band 30%"
    del baseline[2]["cost"]["speed_vs_per_frame"]  # a baseline row from before paired timing: row FPS are compared
    (regression,) = check(current, baseline).regressions
    assert regression == "copy_segformer-tiny_k5: speed ratio vs per-frame 5.000 -> 2.500 (row FPS), band 30%"


def test_check_puts_every_row_in_one_category_and_fails_missing_rows_only_with_require_all():
    current = copy.deepcopy(ROWS[1:])
    current[0]["status"], current[0]["error"] = "error", "RuntimeError: boom"
    current.append(_row("dff", "tiny", 5))
    result = check(current, ROWS)
    assert result.regressions == ["copy_segformer-tiny_k1: status error: RuntimeError: boom"]
    assert (result.regressed, result.new_rows, result.skipped) == (["copy_segformer-tiny_k1"], ["dff_tiny_k5"], [])
    assert result.passed_rows == [r["label"] for r in ROWS[2:]]
    assert result.missing == ["perframe_segformer-tiny_k1"]
    categories = result.passed_rows + result.regressed + result.new_rows + [label for label, _ in result.skipped]
    assert sorted(categories) == sorted(r["label"] for r in current)  # each row once
    strict = check(current, ROWS, require_all=True)
    assert strict.regressions[-1] == "perframe_segformer-tiny_k1: missing from the run (--require-all)"


def test_rows_scored_on_other_videos_are_skipped_with_the_reason_never_compared_nor_new():
    baseline, subset = copy.deepcopy(ROWS), copy.deepcopy(ROWS)
    for row in subset:
        row["videos"] = {"count": 2, "sha256": "b" * 16}
    for row in baseline:
        row["videos"] = {"count": 8, "sha256": "a" * 16}
    result = check(subset, baseline)
    assert result.compared == 0 and not result.new_rows and len(result.skipped) == len(ROWS)
    assert result.skipped[0] == ("perframe_segformer-tiny_k1", "scored on other videos than the baseline's "
                                                               "(2 here, 8 there, or other names)")
    assert result.passed and len(result.missing) == len(ROWS)
    assert not check(subset, baseline, require_all=True).passed
    both = check(subset + copy.deepcopy(baseline), baseline, require_all=True)  # the full-set rows are compared
    assert both.passed and both.compared == len(ROWS)


def test_bench_check_of_a_one_row_run_passes_without_require_all_and_fails_with_it(rows_file, tmp_path, capsys):
    one = tmp_path / "one.jsonl"
    one.write_text(rows_file.read_text().splitlines()[0] + "\n")
    assert main(["check", str(one), "--baseline", str(rows_file)]) == 0
    out = capsys.readouterr().out
    assert "1 passed, 0 regressed, 0 new, 0 skipped; 8 baseline rows not in this run; passed" in out
    assert main(["check", str(one), "--baseline", str(rows_file), "--require-all"]) == 1
    assert "REGRESSION copy_segformer-tiny_k1: missing from the run (--require-all)" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["check", str(empty), "--baseline", str(rows_file)]) == 2
    assert f"{empty} holds no rows; expected the result rows of a bench run" in capsys.readouterr().err


def test_check_refuses_two_rows_of_one_configuration(rows_file, tmp_path, capsys):
    twice = copy.deepcopy(ROWS) + [copy.deepcopy(ROWS[2])]
    twice[-1]["checkpoint"] = {"path": "other.pt", "sha256": "f" * 64}
    with pytest.raises(ValueError, match="two finished rows in the baseline share the configuration of 'copy_segformer-tiny_k5'"):
        check(ROWS, twice)
    baseline = tmp_path / "baseline.jsonl"
    write_rows_atomically(baseline, twice)
    assert main(["check", str(rows_file), "--baseline", str(baseline)]) == 2
    assert "keep one per configuration" in capsys.readouterr().err


def test_check_skips_rows_trained_differently_down_the_chain_and_compares_rows_without_a_record():
    segmentor = {"dataset": "synthetic", "split": "train", "iterations": 1800, "seed": 0, "final_loss": 0.1,
                 "started_from": []}
    stage = {"dataset": "synthetic", "split": "train", "iterations": 1000, "seed": 0, "final_loss": 4.4,
             "started_from": [{"file": "perframe-mask2former-tiny-s0-it1800.pt", **segmentor}]}
    baseline = copy.deepcopy(ROWS)
    for row in baseline:
        row["checkpoint"] = {"path": "a.pt", "sha256": "a" * 64, "training": copy.deepcopy(stage)}
    current = copy.deepcopy(baseline)
    current[4]["checkpoint"]["training"]["final_loss"] = 4.1  # retrained the same way: losses may differ
    current[4]["checkpoint"]["training"]["started_from"][0]["dataset_root"] = "/elsewhere"
    assert check(current, baseline).passed
    current[4]["checkpoint"]["training"]["iterations"] = 3000
    current[4]["checkpoint"]["training"]["started_from"][0]["iterations"] = 600
    result = check(current, baseline)
    assert not result.regressions and result.skipped == [(
        "mpvss_tiny_query-based-flow_k5", "trained differently (iterations 1000 -> 3000; started from 1: iterations "
                                          "1800 -> 600): not like with like")]
    assert not check(current, baseline, require_all=True).passed  # the gate still fails: the row is missing
    current[4]["checkpoint"]["training"] = copy.deepcopy(stage)
    current[4]["checkpoint"]["training"]["threads"] = 1  # compared only where both record it
    assert check(current, baseline).passed
    for row in baseline:
        row["checkpoint"]["training"]["threads"] = 2
    assert check(current, baseline).skipped[0][1] == "trained differently (threads 2 -> 1): not like with like"
    del current[4]["checkpoint"]["training"]
    assert check(current, baseline).passed  # a row without a training record (older rows, given weights)


def test_tolerances_parse_and_reject_unknown_names():
    assert parse_tolerances("miou=1,speed=0.5")["miou"] == 1.0
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_tolerances("accuracy=1")
    assert json.dumps(parse_tolerances(None))


def test_rows_of_random_weights_are_marked_in_every_table_and_figure_and_never_on_the_front(tmp_path):
    random_row = {**_row("perframe", "segformer-b0", 1, miou=0.1, gflops=0.5, fps=30.0), "weights": "random"}
    path = tmp_path / "rows.jsonl"
    write_rows_atomically(path, [*ROWS, random_row])
    written = write_report([path], tmp_path / "report", ("md",))
    comparison = (tmp_path / "report" / "comparison_synthetic.md").read_text()
    assert "perframe [random weights]" in comparison and "their accuracy is not a result" in comparison
    assert "[random weights]" in (tmp_path / "report" / "per_frame_cost.md").read_text()
    assert sum(p.suffix == ".png" for p in written) >= 4
    frame = load_frame([path])  # the front the figure draws leaves the random row out
    trained = frame[~frame["random"]].dropna(subset=["gflops", "miou"])
    assert (0.5, 0.1) not in pareto_front(list(zip(trained["gflops"], trained["miou"])))


def test_check_does_not_compare_accuracy_of_random_weights(tmp_path, capsys):
    baseline = [{**row, "weights": "random"} for row in ROWS[:2]]
    current = [{**row, "weights": "random", "metrics": {**row["metrics"], "miou": 1.0}} for row in ROWS[:2]]
    result = check(current, baseline)
    assert result.passed and len(result.random_weights) == 2
    changed = copy.deepcopy(current)
    changed[0]["cost"]["params_m"] = 4.0  # cost is still compared
    assert not check(changed, baseline).passed
    write_rows_atomically(tmp_path / "base.jsonl", baseline)
    write_rows_atomically(tmp_path / "run.jsonl", current)
    assert main(["check", str(tmp_path / "run.jsonl"), "--baseline", str(tmp_path / "base.jsonl")]) == 0
    assert "accuracy not compared: perframe_segformer-tiny_k1 (random weights in the baseline and the results)" \
        in capsys.readouterr().out


def test_report_refuses_rows_of_one_dataset_scored_on_different_videos_naming_the_files(rows_file, tmp_path, capsys):
    subset = [dict(copy.deepcopy(row), videos={"count": 1, "sha256": "c" * 16}) for row in ROWS[:2]]
    subset_file = tmp_path / "subset.jsonl"
    write_rows_atomically(subset_file, subset)
    assert main(["report", str(rows_file), str(subset_file), "--out", str(tmp_path / "mixed")]) == 2
    error = capsys.readouterr().err
    assert "rows of synthetic were scored on 2 different selections of videos" in error
    assert str(rows_file) in error and str(subset_file) in error and "Report each selection on its own" in error
    assert main(["report", str(subset_file), "--out", str(tmp_path / "alone")]) == 0


def test_figures_give_each_method_its_own_colour_and_each_variant_its_own_marker(rows_file):
    from vssbench.benchmark.report import _presets, _style

    frame = load_frame([rows_file])
    presets = _presets(frame)
    style = {(r["method"], r["variant"], r["preset"]): _style(r, presets) for _, r in frame.iterrows()}
    colours = {method: {s["color"] for (m, _, _), s in style.items() if m == method} for method in presets}
    assert all(not colours[a] & colours[b] for a in colours for b in colours if a < b)  # no colour shared
    assert style[("mpvss", "query-based-flow", "tiny")]["color"] == style[("mpvss", "copy", "tiny")]["color"]
    assert style[("mpvss", "query-based-flow", "tiny")]["marker"] != style[("mpvss", "copy", "tiny")]["marker"]
    perframe = {s["marker"] for (m, _, _), s in style.items() if m == "perframe"}
    assert len(perframe) == 2  # one variant, two segmentors: told apart by marker and shade



def test_figures_average_the_seeds_of_one_configuration_and_say_how_many(rows_file, tmp_path):
    from vssbench.benchmark.report import _series_name, _spread

    seeds = []
    for seed, miou in ((1, 80.0), (2, 86.0)):
        row = copy.deepcopy(ROWS[4])  # mpvss k=5
        row["env"] = {"seed": seed}
        row["metrics"]["miou"] = miou
        seeds.append(row)
    seeds_file = tmp_path / "seeds.jsonl"
    write_rows_atomically(seeds_file, seeds)
    frame = load_frame([rows_file, seeds_file])
    mpvss = frame[(frame["method"] == "mpvss") & (frame["variant"] == "query-based-flow")]
    assert _series_name(mpvss) == "mpvss (query-based-flow): tiny, mean of 1-3 seeds (bars: min-max)"
    at5 = _spread(mpvss, "k", "miou").set_index("k").loc[5]
    assert (at5["mean"], at5["below"], at5["above"]) == (pytest.approx(250 / 3), pytest.approx(250 / 3 - 80),
                                                         pytest.approx(86 - 250 / 3))
    assert "mean of" not in _series_name(frame[frame["method"] == "stt"])
    written = {p.name for p in write_report([rows_file, seeds_file], tmp_path / "report")}
    assert "accuracy_vs_interval.png" in written and "figures.md" in written


def test_bench_run_seeds_trains_and_scores_each_seed_and_the_report_shows_their_spread(small_synthetic, tmp_path):
    output = tmp_path / "rows.jsonl"
    assert main(["run", "--methods", "perframe,copy", "--intervals", "1,5", "--seeds", "0,1", "--data-root",
                 str(small_synthetic), "--max-videos", "1", "--train-iters", "2", "--cache-dir", str(tmp_path / "cache"),
                 "--num-workers", "0", "--speed-rounds", "0", "--quiet", "--output", str(output)]) == 0
    rows = load_rows(output)
    assert sorted((r["label"], r["env"]["seed"]) for r in rows) == sorted(
        (label, seed) for seed in (0, 1) for label in ("perframe_segformer-tiny_k1", "copy_segformer-tiny_k1",
                                                       "copy_segformer-tiny_k5"))
    assert {r["checkpoint"]["declared"]["training"]["seed"] for r in rows} == {0, 1}  # each seed trained its own weights
    assert len({r["checkpoint"]["sha256"] for r in rows}) == 2
    assert main(["report", str(output), "--out", str(tmp_path / "report"), "--quiet"]) == 0
    seeds = (tmp_path / "report" / "seeds.md").read_text()
    assert seeds.count("|       2 |") == 3  # three configurations, two seeds each
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--seed", "1", "--seeds", "0,1"])  # one or the other
    assert exit_.value.code == 2
