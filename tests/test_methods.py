import pytest
import torch

from quiet import QUIET
from vssbench.benchmark.training import ensure_trained, train
from vssbench.methods.weights import checkpoint_metadata, save_checkpoint, to_portable
from vssbench.cli import main
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import METHODS, KeySchedule, SpecError, build_method, parse_spec
from vssbench.methods.segmentors import Mask2Former, build_segmentor, semantic_from_masks


def test_key_schedule():
    schedule = KeySchedule(5)
    assert [t for t in range(12) if schedule.is_key(t)] == [0, 5, 10]
    assert [t for t in range(6) if KeySchedule(3, offset=2).is_key(t)] == [2, 5]
    assert all(KeySchedule(1).is_key(t) for t in range(4))
    rotating = KeySchedule(3, rotate=True)  # DCFM's official test: the v-th video starts at frame v mod k
    assert [[t for t in range(7) if rotating.is_key(t, v)] for v in range(4)] == [[0, 3, 6], [1, 4], [2, 5], [0, 3, 6]]
    assert [t for t in range(6) if schedule.is_key(t, 3)] == [0, 5]  # without rotate the video does not matter
    assert KeySchedule(5).record() == {"type": "interval", "key_interval": 5, "offset": 0}  # rows' hashes kept
    assert rotating.record() == {"type": "interval", "key_interval": 3, "offset": 0, "rotate_offset": True}
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            KeySchedule(bad)


def test_spec_parsing_and_errors():
    assert parse_spec("perframe") == ("perframe", "segformer-tiny")
    assert parse_spec("copy:mask2former-tiny") == ("copy", "mask2former-tiny")
    with pytest.raises(SpecError, match="unknown method 'nope'.*valid methods: accel, cffm, copy, dcfm, dff, mpvss, mrcfa, perframe, stt, tfc"):
        parse_spec("nope:tiny")
    with pytest.raises(SpecError, match="unknown preset 'segformer-b9'.*segformer-b0"):
        parse_spec("perframe:segformer-b9")
    with pytest.raises(SpecError, match="unknown variant 'x'.*valid variants: default"):
        build_method("copy", 8, variant="x")
    assert {"perframe", "copy"} <= set(METHODS)


@pytest.mark.parametrize("preset", ["segformer-tiny", "mask2former-tiny", "pspnet-tiny"])
def test_tiny_segmentors_extract_decode_shapes(preset):
    torch.manual_seed(0)
    segmentor = build_segmentor(preset, 8).eval()
    image = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        features = segmentor.extract(image)
        scores = segmentor.decode(features, (64, 96))
        assert torch.equal(scores, segmentor(image))
    assert scores.shape == (2, 8, 64, 96)
    assert all(f.shape[0] == 2 and f.ndim == 4 for f in features)


def test_segformer_stage_shapes():
    segmentor = build_segmentor("segformer-tiny", 8)
    features = segmentor.extract(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in features] == [(16, 16, 24), (32, 8, 12), (64, 4, 6), (128, 2, 3)]
    assert len(segmentor.extract_stages(torch.randn(1, 3, 64, 96), stages=2)) == 2


def test_mask2former_outputs_and_semantic_inference():
    segmentor = build_segmentor("mask2former-tiny", 5).eval()
    assert isinstance(segmentor, Mask2Former)
    with torch.no_grad():
        out = segmentor.decode_queries(segmentor.extract(torch.randn(1, 3, 64, 96)), (64, 96))
    assert out.class_logits.shape == (1, 16, 6)
    assert out.mask_logits.shape == (1, 16, 16, 24)
    assert out.query_embeddings.shape == (1, 16, 32)
    assert len(out.mask_logits_per_layer) == 3  # initial prediction + 2 decoder layers
    # Semantic score of class c = sum over queries of p(c | q) * sigmoid(mask_q), here checked by hand.
    class_logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])  # 2 queries, 2 classes + no-object
    mask_logits = torch.tensor([[[[0.0]], [[1.0]]]])
    probs = class_logits.softmax(-1)
    expected = probs[0, 0, :2] * 0.5 + probs[0, 1, :2] * torch.sigmoid(torch.tensor(1.0))
    assert torch.allclose(semantic_from_masks(class_logits, mask_logits, (1, 1))[0, :, 0, 0], expected)


def test_paper_presets_match_published_parameter_counts():
    # Published: Mask2Former R50 44.0M, Swin-T 47.4M (124 classes, MPVSS Table 1); SegFormer MiT-B0 3.8M.
    def millions(preset):
        return sum(p.numel() for p in build_segmentor(preset, 124).parameters()) / 1e6

    assert millions("mask2former-r50") == pytest.approx(44.0, rel=0.01)
    assert millions("mask2former-swin-t") == pytest.approx(47.4, rel=0.01)
    assert millions("segformer-b0") == pytest.approx(3.8, rel=0.03)


def test_copy_reuses_key_scores_and_perframe_does_not():
    torch.manual_seed(0)
    copy = build_method("copy:segformer-tiny", 8).eval()
    perframe = build_method("perframe:segformer-tiny", 8).eval()
    perframe.load_state_dict(copy.state_dict())
    key, other = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        copy.reset()
        key_scores = copy.step(key, True)
        assert torch.equal(copy.step(other, False), key_scores)
        assert torch.equal(key_scores, perframe.step(key, True))
        assert not torch.equal(perframe.step(other, False), key_scores)
        assert torch.equal(copy.step(other, True), perframe.step(other, True))
        copy.reset()
        # After a reset the first frame is computed even if the schedule says non-key.
        assert torch.equal(copy.step(other, False), perframe.step(other, False))


def test_methods_are_deterministic_for_a_seed():
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        method = build_method("perframe:pspnet-tiny", 8).eval()
        with torch.no_grad():
            outputs.append(method.step(torch.ones(1, 3, 64, 96), True))
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize(
    "spec,ratio",
    # Mask2Former's set loss keeps a large "no object" classification term early on, so it falls slower.
    [("perframe:segformer-tiny", 0.7), ("perframe:mask2former-tiny", 0.85), ("perframe:pspnet-tiny", 0.7)],
)
def test_training_reduces_the_loss_deterministically(spec, ratio, small_synthetic):
    dataset = load_synthetic(small_synthetic, "train")
    reports, states = [], []
    for _ in range(2):
        torch.manual_seed(0)
        method = build_method(spec, dataset.num_classes)
        reports.append(train(method, dataset, iterations=40, seed=1, options=QUIET))
        states.append(method.state_dict())
    report = reports[0]
    assert report.final_loss < ratio * report.first_loss
    assert reports[0].history == reports[1].history
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_a_cached_stage_is_retrained_when_the_segmentor_it_started_from_changes(small_synthetic, tmp_path):
    dataset = load_synthetic(small_synthetic, "train")

    def dff_checkpoint():
        torch.manual_seed(0)
        return ensure_trained(build_method("dff:tiny", dataset.num_classes), dataset, tmp_path, iterations=2)

    first = dff_checkpoint()
    assert dff_checkpoint() == first  # cached: found under the same name
    segmentor = build_method("perframe:segformer-tiny", dataset.num_classes)
    train(segmentor, dataset, iterations=3, options=QUIET)
    (cached,) = tmp_path.glob("perframe-segformer-tiny-s0-it2-*.pt")
    save_checkpoint(segmentor, cached)  # what the cache holds changed
    retrained = dff_checkpoint()
    assert retrained != first and retrained.is_file()
    assert dff_checkpoint() == retrained


def test_stage_iterations_change_the_stage_schedule_only_and_match_bench_train(small_synthetic, tmp_path):
    """`bench run --stage-iters N` trains the stage N iterations on the segmentor of the usual schedule,
    to the very weights `bench train --iters N --init SEGMENTOR` gives (the schedule study of reports/synthetic/findings.md relies on it)."""
    dataset = load_synthetic(small_synthetic, "train")
    torch.manual_seed(0)
    method = build_method("dff:tiny", dataset.num_classes)
    stage = ensure_trained(method, dataset, tmp_path / "cache", iterations=2, stage_iterations=3)
    (segmentor,) = (tmp_path / "cache").glob("perframe-segformer-tiny-s0-it2-*.pt")
    assert "-it3-" in stage.name
    record = checkpoint_metadata(stage)  # the whole chain: the stage's schedule and its segmentor's
    assert (record["iterations"], record["seed"], record["split"]) == (3, 0, "train")
    (start,) = record["started_from"]
    assert (start["file"], start["iterations"], start["started_from"]) == (segmentor.name, 2, [])
    out = tmp_path / "dff.pt"
    assert main(["train", "--method", "dff:tiny", "--data-root", str(small_synthetic), "--iters", "3",
                 "--init", str(segmentor), "--out", str(out)]) == 0
    by_hand = torch.load(out, weights_only=True)
    assert all(torch.equal(value, by_hand["state_dict"][name])
               for name, value in to_portable(method, method.state_dict()).items())
    assert by_hand["metadata"] == record


def test_auto_trained_weights_do_not_depend_on_what_the_process_ran_before(small_synthetic, tmp_path):
    """The segmentor trained on the way to a stage starts from its seed's initialisation, not from
    wherever earlier builds and trainings left the global random state."""
    dataset = load_synthetic(small_synthetic, "train")
    states = []
    for cache, draws_before in ((tmp_path / "a", 0), (tmp_path / "b", 1000)):
        torch.manual_seed(0)
        method = build_method("dff:tiny", dataset.num_classes)
        torch.rand(draws_before)
        ensure_trained(method, dataset, cache, iterations=2)
        states.append(method.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
