import pytest
import torch

from quiet import QUIET
from vssbench.benchmark.profiler import method_flops
from vssbench.benchmark.results import load_rows
from vssbench.benchmark.training import train
from vssbench.cli import main
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.stt import COUNTED_QUERY_FRACTION, MAX_MEMORY, SparseTemporalAttention, hard_points, window_radius


def test_key_windows_grow_from_3x3_to_9x9_and_give_407_keys_for_seven_frames():
    sides = [2 * window_radius(d) + 1 for d in range(1, MAX_MEMORY + 1)]
    assert sides == [3, 5, 7, 9, 9, 9, 9]
    assert sum(side * side for side in sides) == 407


def _attention_with_spike(distance: int, offset: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The query at (8, 8) attends over ``distance`` memory frames; the oldest has one position,
    ``offset`` away from the query, with a value far from every other. Returns the query's output
    without and with that position altered."""
    torch.manual_seed(0)
    attention = SparseTemporalAttention(channels=4, dim=4, heads=1).eval()
    features = torch.randn(1, 4, 17, 17)
    memory = [torch.randn(1, 17, 17, 8) for _ in range(distance)]
    selected = torch.zeros(1, 17, 17, dtype=torch.bool)
    selected[0, 8, 8] = True
    spiked = [m.clone() for m in memory]
    spiked[-1][0, 8 + offset[0], 8 + offset[1], 4:] = 100.0  # the value half of the entry
    with torch.no_grad():
        return attention(features, memory, selected)[0, :, 8, 8], attention(features, spiked, selected)[0, :, 8, 8]


@pytest.mark.parametrize("distance, inside, outside", [(1, (1, -1), (2, 0)), (2, (2, 2), (0, 3)),
                                                       (3, (-3, 3), (4, 0)), (4, (4, -4), (5, 0)),
                                                       (7, (-4, 4), (0, -5))])
def test_a_query_sees_exactly_the_window_of_each_memory_frame(distance, inside, outside):
    before, after = _attention_with_spike(distance, inside)
    assert not torch.allclose(before, after)
    before, after = _attention_with_spike(distance, outside)
    assert torch.equal(before, after)


def test_only_selected_queries_change():
    torch.manual_seed(0)
    attention = SparseTemporalAttention(channels=8, dim=8, heads=2).eval()
    features = torch.randn(2, 8, 10, 12)
    memory = [torch.randn(2, 10, 12, 16) for _ in range(3)]
    selected = torch.rand(2, 10, 12) < 0.3
    with torch.no_grad():
        out = attention(features, memory, selected)
    changed = (out != features).any(1)
    assert torch.equal(changed, selected)


def test_hard_points_lie_within_two_positions_of_a_predicted_boundary():
    logits = torch.zeros(1, 3, 12, 12)
    logits[0, 0, :, :6] = 1  # class 0 on the left half, class 1 on the right
    logits[0, 1, :, 6:] = 1
    hard = hard_points(logits)[0]
    assert hard[:, 4:8].all() and not hard[:, :4].any() and not hard[:, 8:].any()


def test_with_no_memory_the_output_is_pspnet_alone():
    torch.manual_seed(0)
    stt = build_method("stt:tiny", 8).eval()
    pspnet = build_method("perframe:pspnet-tiny", 8).eval()
    pspnet.segmentor.load_state_dict(stt.segmentor.state_dict())
    torch.nn.init.normal_(stt.selector.weight, std=10.0)  # a random selector that varies enough to mark points
    frames = torch.randn(4, 1, 3, 64, 96)
    stt.memory_frames = 0
    stt.reset()
    with torch.no_grad():
        for frame in frames:
            assert torch.equal(stt.step(frame, False), pspnet.step(frame, False))
        stt.memory_frames = MAX_MEMORY  # with memory, only the first frame of a video is PSPNet's
        stt.reset()
        outputs = [stt.step(frame, False) for frame in frames]
        assert torch.equal(outputs[0], pspnet.step(frames[0], False))
        assert not torch.equal(outputs[2], pspnet.step(frames[2], False))


def test_memory_length_is_validated():
    stt = build_method("stt:tiny", 8)
    with pytest.raises(ValueError, match="0..7"):
        stt.memory_frames = 8


def test_flops_grow_with_selected_queries_times_keys_not_with_frame_area():
    torch.manual_seed(0)
    stt = build_method("stt:tiny", 8).eval()
    frame = torch.randn(1, 3, 64, 96)
    gflops = {}
    for memory in (1, 2, 7):
        stt.memory_frames = memory
        gflops[memory] = method_flops(stt, frame)["gflops_key"]
    positions = (64 // 8) * (96 // 8)
    queries = round(COUNTED_QUERY_FRACTION * positions)
    dim = stt.attention.dim
    # Adding memory frames adds only the attention of the counted queries over their extra keys:
    # q.k and attention-times-value, dim multiply-adds each per (query, key).
    assert gflops[2] - gflops[1] == pytest.approx(queries * 25 * 2 * dim / 1e9, abs=1e-9)
    assert gflops[7] - gflops[1] == pytest.approx(queries * (407 - 9) * 2 * dim / 1e9, abs=1e-9)


def test_training_reduces_the_loss_and_updates_attention_and_selector_only(small_synthetic):
    method = build_method("stt:tiny", 8)
    frozen = {n: p.clone() for n, p in method.segmentor.state_dict().items()}
    report = train(method, load_synthetic(small_synthetic, "train"), iterations=30, options=QUIET)
    assert report.final_loss < report.first_loss
    assert all(torch.equal(p, frozen[n]) for n, p in method.segmentor.state_dict().items())  # batch-norm stats too
    trainable = {n for n, p in method.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("attention.", "selector.")) for n in trainable)


def test_run_sweeps_memory_length_in_place_of_the_interval(small_synthetic, tmp_path):
    output = tmp_path / "rows.jsonl"
    code = main(["run", "--methods", "stt:tiny", "--data-root", str(small_synthetic), "--memory", "0,2",
                 "--intervals", "1,5", "--train-iters", "5", "--cache-dir", str(tmp_path / "cache"),
                 "--output", str(output), "--max-videos", "1"])
    assert code == 0
    rows = load_rows(output)
    assert [r["label"] for r in rows] == ["stt_tiny_m0", "stt_tiny_m2"]
    assert [r["schedule"] for r in rows] == [{"type": "memory", "memory_frames": 0},
                                             {"type": "memory", "memory_frames": 2}]
    assert [r["cost"]["memory_frames"] for r in rows] == [0, 2]
    assert rows[1]["cost"]["gflops_key"] > rows[0]["cost"]["gflops_key"]
    assert rows[0]["cost"]["query_fraction_measured"] is None
    assert 0 <= rows[1]["cost"]["query_fraction_measured"] <= 1


def test_run_rejects_memory_lengths_outside_0_to_7(small_synthetic, tmp_path, capsys):
    assert main(["run", "--methods", "stt:tiny", "--data-root", str(small_synthetic), "--memory", "0,9",
                 "--output", str(tmp_path / "rows.jsonl")]) == 2
    assert "--memory" in capsys.readouterr().err
