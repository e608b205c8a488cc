import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from vssbench.benchmark.profiler import (
    IGNORED_OPERATORS,
    UnsupportedOperatorError,
    average_over_clip,
    cost_block,
    count_flops,
    latency_summary,
    measure_latency,
)
from vssbench.methods.base import build_method, registered_methods
from vssbench.methods.tfc import PROFILE_REFINE_FRACTION


def test_average_over_a_15_frame_clip():
    # k=5: key frames 0, 5, 10 -> 3 key + 12 non-key.
    assert average_over_clip(100.0, 10.0, 5) == pytest.approx((3 * 100 + 12 * 10) / 15)
    assert average_over_clip(100.0, 10.0, 1) == 100.0
    assert average_over_clip(100.0, 10.0, 10) == pytest.approx((2 * 100 + 13 * 10) / 15)


@pytest.mark.parametrize("preset", ["segformer-tiny", "pspnet-tiny", "mask2former-tiny"])
def test_conv_and_matmul_totals_agree_with_torch_flop_counter(preset):
    """fvcore counts 1 per multiply-add, FlopCounterMode 2: the conv and matmul totals must differ by exactly 2x.

    Scaled-dot-product attention is left out of the comparison: on CPU it runs a math path that
    FlopCounterMode does not count; ``test_scaled_dot_product_attention_is_counted`` checks our handle by hand.
    For Mask2Former the trace drops the auxiliary layers' class logits (computed for the training loss,
    unused by the semantic map: 2 x 16 x 32 x 9 multiply-adds here), which FlopCounterMode counts.
    """
    torch.manual_seed(0)
    method = build_method(f"perframe:{preset}", 8).eval()
    frame = torch.randn(1, 3, 64, 96)
    _, by_operator = count_flops(method, lambda: method.step(frame, True))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        method.step(frame, True)
    torch_counts = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    torch_conv = torch_counts.get("convolution", 0)
    torch_matmul = sum(torch_counts.get(op, 0) for op in ("mm", "addmm", "bmm", "baddbmm"))
    ours_conv = by_operator.get("conv", 0)
    ours_matmul = sum(by_operator.get(op, 0) for op in ("linear", "matmul", "bmm", "einsum", "baddbmm", "addmm"))
    assert ours_conv > 0 and 2 * ours_conv == torch_conv
    unused_auxiliary_class_logits = 2 * 16 * 32 * 9 if preset == "mask2former-tiny" else 0
    assert 2 * (ours_matmul + unused_auxiliary_class_logits) == pytest.approx(torch_matmul, rel=1e-4)
    assert (ours_matmul > 0) == (preset != "pspnet-tiny")


def test_scaled_dot_product_attention_is_counted():
    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 6)
    total, by_operator = count_flops(torch.nn.Module(), lambda: F.scaled_dot_product_attention(q, k, v))
    assert total == 2 * 4 * 10 * 12 * (8 + 6)
    assert by_operator == {"scaled_dot_product_attention": total}


def test_grid_sample_is_counted():
    image, grid = torch.randn(1, 3, 8, 8), torch.rand(1, 5, 7, 2) * 2 - 1
    total, _ = count_flops(torch.nn.Module(), lambda: F.grid_sample(image, grid, align_corners=False))
    assert total == 4 * 1 * 3 * 5 * 7  # bilinear: 4 per output value


def test_unsupported_operator_fails_with_its_name():
    x = torch.randn(4, 4)
    assert "aten::erfinv" not in IGNORED_OPERATORS
    with pytest.raises(UnsupportedOperatorError, match=r"aten::erfinv \(x1\)"):
        count_flops(torch.nn.Module(), lambda: torch.erfinv(x.clamp(-0.5, 0.5)) @ x)


_TINY_CONFIGURATIONS = [(f"{name}:{preset}", variant) for name, cls in sorted(registered_methods().items())
                        for preset in cls.presets if preset.endswith("tiny") for variant in cls.variants]


@pytest.mark.parametrize(("spec", "variant"), _TINY_CONFIGURATIONS)
def test_every_registered_path_counts_without_unknown_operators(spec, variant):
    """Every method, every tiny preset, every variant: both paths count, nothing unknown skipped."""
    method = build_method(spec, 8, variant)
    _check_cost_block(spec, method)


@pytest.mark.parametrize("variant", ["query-based-flow", "copy", "optical-flow", "query-random", "query-learned",
                                     "query-for-pf"])
def test_every_mpvss_variant_counts_without_unknown_operators(variant):
    method = build_method("mpvss:tiny", 8, variant)
    block = cost_block(method, torch.randn(1, 3, 64, 96), [1, 5], latency=None)
    assert block["gflops_nonkey"] < block["gflops_key"]
    assert (block["gflops_nonkey"] == 0) == (variant == "copy")


def _check_cost_block(spec, method):
    block = cost_block(method, torch.randn(1, 3, 64, 96), [1, 5], latency=None)
    assert block["gflops_key"] > 0 and block["gflops_nonkey"] >= 0
    if spec.startswith("copy"):
        assert block["gflops_nonkey"] == 0.0
        assert block["gflops_avg"]["5"] == pytest.approx(block["gflops_key"] * 3 / 15, abs=1e-4)
    if spec.startswith("perframe"):
        assert block["gflops_nonkey"] == block["gflops_key"]
    assert sum(block["params_by_component_m"].values()) == pytest.approx(block["params_m"], abs=0.02)
    assert block["flop_counter"]["name"] == "fvcore"


def test_latency_over_whole_key_interval_cycles():
    method = build_method("copy:segformer-tiny", 8)
    summary = measure_latency(method, torch.randn(1, 3, 64, 96), [1, 5], repeats=3, warmup=1)
    assert summary["latency_ms_key"]["n"] == 3 and summary["latency_ms_nonkey"]["n"] == 12
    assert summary["latency_ms_key"]["median"] > summary["latency_ms_nonkey"]["median"]
    assert summary["fps"]["5"] > summary["fps"]["1"]


def test_latency_times_the_paths_whose_flops_are_counted():
    """On a repeated frame TFC's similarity is 1 everywhere, so a plain non-key step refines no
    point at all; the timed non-key path refines the share its FLOPs count, like its FLOPs."""
    torch.manual_seed(0)
    method = build_method("tfc:tiny", 8)
    refined = []
    refine = method.refinement.forward

    def counting_refine(queries, *args, **kwargs):
        refined.append(queries.shape[1])
        return refine(queries, *args, **kwargs)

    method.refinement.forward = counting_refine
    summary = measure_latency(method, torch.randn(1, 3, 64, 96), [3], repeats=2, warmup=0)
    points_at_quarter_resolution = (64 // 4) * (96 // 4)
    assert summary["latency_ms_nonkey"]["n"] == 4
    assert refined == [int(PROFILE_REFINE_FRACTION * points_at_quarter_resolution + 0.5)] * 4


def test_latency_summary_by_hand():
    summary = latency_summary([10.0, 12.0, 14.0, 100.0], [1.0] * 8, [1, 4], uses_key_frames=True)
    assert summary["latency_ms_key"]["median"] == 13.0
    assert summary["latency_ms_key"]["iqr"] == pytest.approx(35.5 - 11.5)
    assert summary["fps"]["1"] == pytest.approx(1000 / 13.0, abs=1e-3)
    assert summary["fps"]["4"] == pytest.approx(1000 / ((13.0 + 3 * 1.0) / 4), abs=1e-3)


def test_bench_profile_writes_cost_rows(tmp_path, capsys):
    from vssbench.benchmark.results import load_rows
    from vssbench.cli import main

    output = tmp_path / "profile.jsonl"
    assert main(["profile", "--methods", "perframe:segformer-tiny,copy:segformer-tiny", "--resolution", "64x96",
                 "--num-classes", "8", "--intervals", "1,5", "--repeats", "2", "--speed-rounds", "3",
                 "--output", str(output)]) == 0
    perframe, copy = load_rows(output)
    # Timed in alternation with its segmentor, the rounds asked for at each interval (how much faster is a
    # measurement: tests/benchmarks, never a timed assertion here, where other work shares the cores).
    assert "speed_vs_per_frame" not in perframe["cost"]
    ratios = copy["cost"]["speed_vs_per_frame"]
    for k in ("1", "5"):
        assert ratios[k]["reference"] == "perframe:segformer-tiny" and len(ratios[k]["rounds"]) == 3
        assert ratios[k]["ratio"] > 0
    for row in (perframe, copy):
        cost = row["cost"]
        assert set(cost) >= {"params_m", "params_by_component_m", "gflops_key", "gflops_nonkey", "gflops_avg",
                             "latency_ms_key", "latency_ms_nonkey", "fps", "device", "flop_counter"}
        assert cost["device"].startswith("CPU") and row["resolution"] == [64, 96]
    assert copy["cost"]["gflops_avg"]["5"] < perframe["cost"]["gflops_avg"]["5"] == perframe["cost"]["gflops_key"]
    out = capsys.readouterr().out
    assert "GFLOPs avg k=5" in out and "vs per-frame k=5" in out and "Latency and FPS on CPU" in out
    assert main(["profile", "--methods", "nope"]) == 2
    assert main(["profile", "--methods", "copy:segformer-tiny", "--speed-rounds", "-1"]) == 2
    assert "--speed-rounds" in capsys.readouterr().err


def test_a_method_without_key_frames_is_timed_once_for_every_interval():
    from vssbench.benchmark.profiler import paired_speed_ratios
    from vssbench.benchmark.runner import per_frame_reference

    torch.manual_seed(0)
    stt = build_method("stt:tiny", 8).eval()
    ratios = paired_speed_ratios(stt, per_frame_reference(stt, "cpu"), torch.randn(1, 3, 64, 96), [1, 5], rounds=2)
    assert ratios["1"] is ratios["5"] and ratios["1"]["reference"] == "perframe:pspnet-tiny"
    assert ratios["1"]["ratio"] > 0


def test_the_gpu_check_skips_without_cuda_and_runs_its_code_on_a_cpu(tmp_path, monkeypatch, capsys):
    """scripts/gpu_check.py: exit 0 and no report where no CUDA device is; with --device cpu every step but the
    CUDA events and AMP runs (tiny presets), one row per preset, a failing preset a row of its own."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu-check.md"
    assert gpu_check.main(["--out", str(out)]) == 0
    assert "skipped: no CUDA device here" in capsys.readouterr().out and not out.exists()
    assert gpu_check.main(["--device", "cpu", "--presets", "dcfm:tiny:2,tfc:tiny:4,nosuch:tiny:2", "--resolution",
                           "64x96", "--rounds", "1", "--out", str(out)]) == 0
    table = [line for line in out.read_text().splitlines() if line.startswith("| ") and "preset" not in line]
    assert [line.split("|")[1].strip() for line in table] == ["dcfm:tiny", "tfc:tiny", "nosuch:tiny"]
    assert table[0].endswith("| ok |") and table[1].endswith("| ok |") and "SpecError" in table[2]
    cells = table[0].split("|")
    assert float(cells[3]) > 0 and float(cells[9]) > 0  # key ms fp32, and a speed ratio against segformer-tiny


def test_the_harness_report_times_each_piece_at_vspw_scale(tmp_path, monkeypatch):
    """scripts/harness_scale.py on one generated 480 x 853 video of 3 frames: the report's pieces, its
    frames per second and the workers 8 GPUs at TFC-B0's rate would need."""
    import importlib.util
    import re
    from pathlib import Path

    monkeypatch.setenv("VSSBENCH_CACHE", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("harness", Path(__file__).parents[1] / "scripts" / "harness_scale.py")
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    out = tmp_path / "harness.md"
    harness.main(["--out", str(out), "--videos", "1", "--frames", "3", "--rounds", "1"])
    text = out.read_text()
    assert "3 frames of 853 x 480" in text and "124 classes" in text
    fps = float(re.search(r"\*\*the whole harness on one core\*\* \| \*\*[\d.]+\*\* \| \*\*([\d.]+)\*\*", text)[1])
    loading = float(re.search(r"one worker loads ([\d.]+) frames/s", text)[1])
    workers = int(re.search(r"need (\d+) loading worker", text)[1])
    assert 0 < fps <= loading and workers == -(-8 * 38.2 // loading)
    assert not (tmp_path / "harness.rows.tmp.jsonl").exists()


def test_peak_memory_is_the_steps_own_and_follows_the_frame_size():
    """A key and a non-key step's peak (on this CPU: resident growth after the heap is trimmed), in the
    cost block of every row; a frame of four times the pixels needs several times the memory."""
    from vssbench.benchmark.profiler import cost_block, peak_memory

    torch.manual_seed(0)
    method = build_method("copy:segformer-tiny", 8).eval()
    small = peak_memory(method, torch.randn(1, 3, 128, 192))
    large = peak_memory(method, torch.randn(1, 3, 256, 384))
    assert small["peak_memory"] == large["peak_memory"] == "cpu peak RSS growth"
    assert large["peak_memory_mib"] > 2.5 * small["peak_memory_mib"] > 0
    block = cost_block(method, torch.randn(1, 3, 64, 96), [1, 5], None)
    assert block["peak_memory"] == "cpu peak RSS growth" and block["peak_memory_mib"] is not None


def test_the_speed_report_times_paper_presets_against_their_segmentor(tmp_path, monkeypatch, capsys):
    """Two presets (tiny ones standing in for the paper's) through the command that writes reports/speed.md:
    ratio, limit and share computed from what it measured, a failing preset reported, not fatal."""
    from vssbench.benchmark import speed_report
    from vssbench.cli import main

    presets = (speed_report.PaperPreset("copy:segformer-tiny", 5, (64, 96), 8, 20.0, 10.0, "a test"),
               speed_report.PaperPreset("cffm:tiny", 1, (64, 96), 8, source="a test"),
               speed_report.PaperPreset("tfc:tiny", 4, (8, 8), 8, source="too small a frame"))
    monkeypatch.setattr(speed_report, "PAPER_PRESETS", presets)
    assert main(["-q", "profile", "--speed-report", "--speed-rounds", "2", "--report-dir", str(tmp_path)]) == 1
    text = (tmp_path / "speed.md").read_text()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| copy") or line.startswith("| cffm")]
    copy, cffm = rows
    assert copy[1] == "perframe:segformer-tiny" and copy[3] == "5" and "2.00 (a test)" in copy[9]
    limit, ratio = float(copy[6]), float(copy[7].split(" (")[0])
    assert limit == pytest.approx(5.0, rel=0.05)  # one key frame of five, copying costing nothing
    assert copy[8] == f"{ratio / limit:.0%}" and len(copy[7].split(" (")[1].split(",")) == 2
    assert cffm[3] == "1" and cffm[1] == "perframe:segformer-tiny"
    assert "| tfc:tiny |" in text and "error:" in text  # 8 x 8 is too small for its network: reported
    assert main(["profile", "--speed-report", "--methods", "copy", "--report-dir", str(tmp_path)]) == 2
    assert "expected some of copy:segformer-tiny" in capsys.readouterr().err
