"""CFFM against GuoleiSun/VSS-CFFM's own code, its test-time protocol, and its training.

``tests/golden/cffm_tiny.pth`` and ``cffm_tiny_reference.pt`` were made by ``scripts/golden_cffm.py``,
which imports CFFM's ``MixVisionTransformer`` and ``CFFMHead_clips_resize1_8`` from a checkout of the
official repository (see its docstring): tiny widths, float64, a 12-frame video whose every frame gets
the clip the official dataset code gives it (frames 0-2 alone, the hard-coded clips of frames 3-8,
(i-9, i-6, i-3, i) after), and one clip whose 1/8 map is a multiple of the 7 x 7 windows.
"""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vssbench.methods.base import build_method
from vssbench.methods.cffm import CFFM
from vssbench.methods.clips import EARLY_CLIPS, clip_for
from vssbench.methods.perframe import PerFrame
from vssbench.methods.segmentors import SEGMENTORS, SegFormer
from vssbench.methods.weights import load_weights

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-10
MIT = dict(hidden_sizes=[16, 32, 48, 64], depths=[2, 1, 1, 1], num_attention_heads=[1, 2, 3, 4], decoder_hidden_size=32)


@pytest.fixture
def golden(monkeypatch):
    monkeypatch.setitem(SEGMENTORS, "golden-segformer", (SegFormer, MIT))
    monkeypatch.setitem(CFFM.presets, "golden", dict(segmentor="golden-segformer", depth=2))
    monkeypatch.setitem(PerFrame.presets, "golden-segformer", {})
    reference = torch.load(GOLDEN / "cffm_tiny_reference.pt", weights_only=True)
    return reference


def _loaded(spec: str = "cffm:golden"):
    torch.manual_seed(0)
    method = build_method(spec, 8)
    record = load_weights(method, GOLDEN / "cffm_tiny.pth")
    return method.double().eval(), record


def _video(method, frames: torch.Tensor) -> torch.Tensor:
    method.reset()
    with torch.no_grad():
        return torch.cat([method.step(frame[None], True) for frame in frames.double()])


def test_the_official_checkpoint_loads_whole_and_computes_what_cffm_computes(golden):
    method, record = _loaded()
    assert (record.format, record.component, record.module) == ("cffm", "method", "")
    assert record.mapped == len(method.state_dict()) and not record.missing
    assert set(record.dropped) == {"index buffers, rebuilt from the configuration",
                                   "mmseg 0.x BaseDecodeHead's conv_seg, which SegFormerHead never calls"}
    assert golden["clips"] == [list(clip_for(i)) for i in range(12)]
    error = (_video(method, golden["video"]) - golden["video_logits"]).abs().amax(dim=(1, 2, 3))
    assert error.max() < TOLERANCE, error  # every frame: the per-frame ones, the hard-coded clips, the rest
    with torch.no_grad():  # a 1/8 map of 14 x 21, a multiple of the windows
        record = method.per_frame(golden["clip_7"].double())
        refined = method.refine(record["half"][None], tuple(record["logits"].shape[2:]))
    assert (refined - golden["clip_7_logits"]).abs().max() < TOLERANCE


def test_a_head_tensor_the_method_does_not_have_is_an_error_naming_it(golden, tmp_path):
    from vssbench.methods.weights import CheckpointError

    payload = torch.load(GOLDEN / "cffm_tiny.pth", weights_only=True)
    payload["state_dict"]["decode_head.extra_branch.weight"] = torch.zeros(2)
    torch.save(payload, tmp_path / "extra.pth")
    torch.manual_seed(0)
    with pytest.raises(CheckpointError, match="tensors the target lacks \\(1\\): decode_head.extra_branch.weight"):
        load_weights(build_method("cffm:golden", 8), tmp_path / "extra.pth")


@pytest.mark.parametrize("name", ["decoder_focal.blocks.1.attn.relative_position_bias_table_to_windows_clips.2",
                                  "decoder_focal.blocks.0.pool_layers_clips.0.weight", "linear_pred2.bias"])
def test_a_perturbed_head_weight_is_seen(golden, name):
    method, _ = _loaded()
    with torch.no_grad():
        method.get_parameter(name).add_(1e-3)
    error = (_video(method, golden["video"]) - golden["video_logits"]).abs().max()
    assert error > 100 * TOLERANCE  # the golden comparison would fail


def test_the_checkpoint_still_gives_perframe_its_segformer_branch(golden):
    method, record = _loaded("perframe:golden-segformer")
    assert (record.format, record.component) == ("cffm", "segmentor")
    assert any("temporal head" in reason for reason in record.dropped)
    with torch.no_grad():  # frames 0-2 of CFFM's protocol are the per-frame branch alone (here upsampled)
        logits = method.step(golden["video"][:3].double(), True)
    expected = F.interpolate(golden["video_logits"][:3], size=logits.shape[2:], mode="bilinear", align_corners=False)
    assert (logits - expected).abs().max() < TOLERANCE


def test_the_clip_protocol_and_the_cache_keep_nine_frames():
    assert [clip_for(i) for i in range(3)] == [(0,), (1,), (2,)]
    assert all(clip_for(i) == clip for i, clip in EARLY_CLIPS.items())
    assert clip_for(9) == (0, 3, 6, 9) and clip_for(40) == (31, 34, 37, 40)
    torch.manual_seed(0)
    method = build_method("cffm:tiny", 8).eval()
    frames = torch.randn(14, 1, 3, 64, 96)
    with torch.no_grad():
        outputs = [method.step(frame, True) for frame in frames]
        assert sorted(method._frames) == list(range(4, 14))  # frames 13-9 .. 13
        per_frame = [method.per_frame(frame)["logits"] for frame in frames]
    assert all(torch.equal(outputs[i], per_frame[i]) for i in range(3))  # no reference frame yet
    assert all((outputs[i] - per_frame[i]).abs().max() > 1e-4 for i in range(3, 14))
    method.reset()  # a new video starts its own protocol again
    with torch.no_grad():
        assert torch.equal(method.step(frames[5], True), per_frame[5])


def train_on_blocks(method, weights: dict[str, float], parts: tuple[str, ...], steps: int = 20) -> list[float]:
    """Train ``method`` on clips whose labels are 8x8 blocks, each class its own colour (learnable at any
    stride), with AdamW; assert at the first step that every term is returned and that the gradient
    reaches every parameter of each of ``parts`` (parameter-name prefixes). Returns the weighted losses."""
    blocks = torch.randint(0, 3, (2, 4, 8, 12))  # labels in 8 x 8 blocks; each class its own colour
    labels = blocks.repeat_interleave(8, 2).repeat_interleave(8, 3)
    frames = torch.eye(3)[labels].permute(0, 1, 4, 2, 3) * 2 + 0.3 * torch.randn(2, 4, 3, 64, 96)
    optimizer = torch.optim.AdamW(method.parameters(), lr=5e-3)
    losses = []
    for _ in range(steps):
        terms = method.loss({"frames": frames, "labels": labels})
        assert set(terms) == set(method.loss_terms()) == set(weights)
        loss = sum(weight * terms[name] for name, weight in weights.items())
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            for part in parts:
                grads = [p.grad for n, p in method.named_parameters() if n.startswith(part)]
                assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), part
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_reaches_every_part_and_lowers_the_loss():
    torch.manual_seed(0)
    losses = train_on_blocks(build_method("cffm:tiny", 3).train(), {"frames": 0.5, "target": 1.0},
                             ("segmentor.model.segformer", "decoder_focal", "linear_pred2"))
    assert losses[-1] < 0.5 * losses[0]


def test_videos_shorter_than_the_clip_are_skipped_and_none_left_is_bad_input(small_synthetic, tmp_path, capsys):
    from dataclasses import replace

    from vssbench.benchmark.training import TrainingClips
    from vssbench.cli import main
    from vssbench.datasets.synthetic import SyntheticSpec, generate, load_synthetic
    from vssbench.recipes import recipe_for

    dataset = load_synthetic(small_synthetic, "train")
    recipe = recipe_for(build_method("cffm:tiny", 8), dataset.name, "synthetic")
    long_video = dataset.videos[0]
    dataset.videos = [replace(long_video, name="short", frames=long_video.frames[:9]), long_video]
    clips = TrainingClips(dataset, recipe, length=8, seed=0)
    assert [v.name for v in clips.videos] == [long_video.name]  # 9 frames cannot reach 9 back from a target
    short = generate(tmp_path / "short", SyntheticSpec(train_videos=1, val_videos=1, frames=4, height=64, width=96),
                     progress=False)
    assert main(["train", "--method", "cffm:tiny", "--data-root", str(short), "--iters", "1", "--batch", "1",
                 "--random-init", "--out", str(tmp_path / "c.pt"), "--num-workers", "0"]) == 2
    error = capsys.readouterr().err
    assert "no labelled video of at least 10 frames" in error and "Traceback" not in error
    assert not (tmp_path / "c.pt").exists()


def test_offset_sampling_draws_a_target_and_its_references(small_synthetic, monkeypatch):
    import numpy as np

    import vssbench.recipes as recipes
    from vssbench.benchmark.training import TrainingClips
    from vssbench.datasets.synthetic import load_synthetic

    dataset = load_synthetic(small_synthetic, "train")
    recipe = recipes.recipe_for(build_method("cffm:tiny", 8), dataset.name, "synthetic")
    clips = TrainingClips(dataset, recipe, length=64, seed=0)
    targets = set()
    for index in range(64):
        video = clips.videos[index % len(clips.videos)]
        frames = clips._frame_indices(video, np.random.default_rng([0, index]))
        assert np.diff(frames).tolist() == [3, 3, 3] and frames[0] >= 0  # (t-9, t-6, t-3, t)
        targets.add(frames[-1])
    assert targets == set(range(9, 20))  # every target the 20-frame videos allow
    sample = clips[0]
    assert sample["frames"].shape[0] == 4 and sample["labels"].shape[0] == 4
    document, original = recipes._file("cffm"), recipes._file
    broken = {**document, "synthetic": {**document["synthetic"],
                                        "sampling": {"value": {"frames": 4, "offsets": [-9, -6]}, "source": "test"}}}
    monkeypatch.setattr(recipes, "_file", lambda method: broken if method == "cffm" else original(method))
    with pytest.raises(recipes.RecipeError, match="offsets \\[-9, -6\\] must be frames - 1 negative integers"):
        recipes.load("cffm", "synthetic")


def test_the_official_protocol_recomputes_each_clip_and_computes_the_golden_outputs(golden):
    """``official`` runs each clip's frames through SegFormer again in one batch, as the official code:
    on frames already a multiple of 32 (64 x 96) it gives the official outputs, as the cache does."""
    torch.manual_seed(0)
    method = build_method("cffm:golden", 8, "official")
    assert method.checkpoint_variant == "default"  # one network, two protocols
    load_weights(method, GOLDEN / "cffm_tiny.pth")
    method.double().eval()
    error = (_video(method, golden["video"]) - golden["video_logits"]).abs().max()
    assert error < TOLERANCE


@pytest.mark.parametrize("spec", ["cffm:tiny", "mrcfa:tiny"])
def test_the_official_protocol_resizes_the_8_bit_image_and_returns_logits_at_that_size(spec):
    """60 x 100 frames: ``official`` gives what the default gives on the image mmcv's AlignedResize makes
    (64 x 128, :func:`resize_like_mmcv` on the 8-bit image) and returns the logits at that size; its input
    differs from the bilinear resize of the normalised frame that MRCFA's default uses."""
    from vssbench.datasets.transforms import from_pixels, resize_like_mmcv, to_pixels
    from vssbench.methods.clips import resize_to_multiple

    generator = torch.Generator().manual_seed(0)
    frames = from_pixels(torch.randint(0, 256, (12, 3, 60, 100), generator=generator, dtype=torch.uint8))
    torch.manual_seed(0)
    official = build_method(spec, 5, "official").eval()
    torch.manual_seed(0)
    default = build_method(spec, 5).eval()
    aligned = from_pixels(resize_like_mmcv(to_pixels(frames), (64, 128)))
    assert not torch.allclose(aligned, resize_to_multiple(frames, 32), atol=1e-3)
    with torch.no_grad():
        ours = torch.cat([official.step(frame[None], True) for frame in frames])
        expected = torch.cat([default.step(frame[None], True) for frame in aligned])
    assert ours.shape[2:] == (64, 128)
    expected = F.interpolate(expected, size=(64, 128), mode="bilinear", align_corners=False)
    assert (ours - expected).abs().max() < 1e-4


def test_the_official_protocol_costs_four_segformer_passes_a_frame():
    from vssbench.benchmark.profiler import method_flops

    frame = torch.randn(1, 3, 64, 96)
    flops = {}
    for spec, variant in [("cffm:tiny", None), ("cffm:tiny", "official"), ("perframe:segformer-tiny", None)]:
        torch.manual_seed(0)
        flops[spec, variant] = method_flops(build_method(spec, 5, variant), frame)["gflops_key"]
    segformer = flops["perframe:segformer-tiny", None]
    extra = flops["cffm:tiny", "official"] - flops["cffm:tiny", None]
    assert extra == pytest.approx(3 * segformer, rel=0.02)  # three references again; per-frame logits included
