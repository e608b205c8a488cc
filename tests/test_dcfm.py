"""DCFM against BUAAHugeGun/DCFM's own code, its key and non-key paths, and its training.

``tests/golden/dcfm_tiny/`` was made by ``scripts/golden_dcfm.py`` (see its docstring), which runs
DCFM's ``DCFMEncoder``, ``DCFMDecoder`` and ``process/video_test.py``'s ``I_forward`` / ``B_forward``
from a checkout of the official repository: MiT at B0's widths (depths 2, 1, 1, 1, MLP ratio 1), head
64 wide, 16 channels of the shallow feature, 5 classes, both head forms, float64. It holds one
``encoder_epoch_1.pth`` and per head ``decoder_epoch_1.pth`` and the references; a test puts a pair in
a ``logs/`` folder, the layout of DCFM's released weights.
"""

import shutil
from pathlib import Path

import pytest
import torch

from vssbench.benchmark.runner import stepped
from vssbench.methods.base import build_method
from vssbench.methods.dcfm import DCFM, Head
from vssbench.methods.segmentors import SEGMENTORS, SegFormer
from vssbench.methods.weights import CheckpointError, load_weights
from vssbench.recipes import RecipeError, recipe_for

GOLDEN = Path(__file__).parent / "golden" / "dcfm_tiny"
TOLERANCE = 1e-10
MIT = dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 1, 1, 1], num_attention_heads=[1, 2, 5, 8],
           mlp_ratios=[1, 1, 1, 1], decoder_hidden_size=64)
EIGHTH = dict(widths=[8, 16, 32, 64])  # the ResNets of exp/cityscapes/dcfm/resnet18, resnet50 at an eighth of their widths
CASES = {  # golden folder -> the preset it was made with
    "head0": dict(segmentor="golden-mit-b0", head=Head(stage1_ch=16)),
    "head1": dict(segmentor="golden-mit-b0", head=Head(stage1_ch=16, head_nums=1)),
    "pspnet18": dict(resnet=dict(block="basic", depths=[2, 2, 2, 2], stem_width=8, stem="7x7", **EIGHTH),
                     head=Head(stage1_ch=4, head_nums=1, bot_ch=40)),
    "pspnet50": dict(resnet=dict(block="bottleneck", depths=[3, 4, 6, 3], stem_width=16, **EIGHTH),
                     head=Head(stage1_ch=16, head_nums=1, bot_ch=160)),
}


def _golden_method(monkeypatch, tmp_path: Path, case: str, variant: str = "default") -> tuple:
    """(the method with the official weights of ``case`` loaded, float64, the load record, the references)."""
    monkeypatch.setitem(SEGMENTORS, "golden-mit-b0", (SegFormer, MIT))
    monkeypatch.setitem(DCFM.presets, "golden", CASES[case])
    logs = tmp_path / "exp" / "logs"
    logs.mkdir(parents=True)
    folder = GOLDEN / case if case.startswith("pspnet") else GOLDEN  # the MiT heads share one encoder file
    shutil.copy(folder / "encoder_epoch_1.pth", logs)
    shutil.copy(GOLDEN / case / "decoder_epoch_1.pth", logs)
    torch.manual_seed(0)
    method = build_method("dcfm:golden", 5, variant)
    record = load_weights(method, tmp_path / "exp")
    return method.double().eval(), record, torch.load(GOLDEN / case / "reference.pt", weights_only=True)


@pytest.fixture(params=sorted(CASES))
def golden(request, monkeypatch, tmp_path):
    """(the method with the official weights loaded, the load record, the references) for one golden case."""
    return _golden_method(monkeypatch, tmp_path, request.param)


def _paths(method: DCFM, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    method.reset()
    with torch.no_grad():
        key = method.step(frames[0].double(), True)
        nonkey = torch.cat([method.step(frame.double(), False) for frame in frames[1:]])
    return key, nonkey


def test_the_released_layout_loads_whole_and_computes_what_dcfm_computes(golden):
    method, record, reference = golden
    assert record.format == "dcfm" and not record.missing
    assert set(record.dropped) <= {"mmseg 0.x BaseDecodeHead's conv_seg, which SegFormerHead never calls"}
    assert bool(record.dropped) == (method.encoder is None)  # a PSPNet encoder's file has nothing to drop
    key, nonkey = _paths(method, reference["frames"])
    assert (key - reference["key_logits"]).abs().max() < TOLERANCE
    assert (nonkey - reference["nonkey_logits"]).abs().max() < TOLERANCE


def test_the_training_forward_computes_the_official_features_and_predictions(golden):
    method, _, reference = golden
    frames = reference["frames"].double()
    with torch.no_grad():
        key_l, nonkey_l, key_u = method.training_features(frames[0], frames[1])
        pred_key_l = method.decoder.classify(key_l, frames.shape[-2:])
        pred_nonkey_l = method.decoder.classify(nonkey_l, frames.shape[-2:])
        agree = (method.decoder.final(key_l).argmax(1) == method.decoder.final(key_u).argmax(1)).unsqueeze(1)
    ours = [pred_key_l, pred_nonkey_l, key_l, nonkey_l, key_l * agree, key_u * agree]
    for name, mine, theirs in zip(("pred_L_t", "pred_L_hat", "feat_L_t", "feat_L_hat", "mf_L", "mf_U"), ours,
                                  reference["train"]):
        assert (mine - theirs).abs().max() < TOLERANCE, name


@pytest.mark.parametrize("name", ["segmentor.model.segformer.stages.0.blocks.0.mlp.fc1.weight",
                                  "segmentor.model.segformer.stages.3.blocks.0.attention.q_proj.weight",
                                  "encoder.resnet.stem.0.0.weight", "encoder.resnet.stages.0.0.conv1.weight",
                                  "encoder.resnet.stages.3.1.conv2.weight", "encoder.ppm.branches.3.1.0.weight",
                                  "decoder.bottleneck.weight", "decoder.fusion.conv.weight", "decoder.final.1.weight"])
def test_a_perturbed_weight_is_seen(golden, name):
    method, _, reference = golden
    parameter = dict(method.named_parameters()).get(name)
    if parameter is None:  # head1's classifier sits at final.4; each encoder has its own names
        pytest.skip(f"{name} is not a parameter of this case")
    with torch.no_grad():
        parameter.add_(0.01 * torch.randn_like(parameter))
    key, nonkey = _paths(method, reference["frames"])
    error = max((key - reference["key_logits"]).abs().max(), (nonkey - reference["nonkey_logits"]).abs().max())
    assert error > 100 * TOLERANCE  # the golden comparison would fail


@pytest.mark.parametrize("variant", ["official", "default"])
def test_the_runner_steps_it_as_the_official_test_loop_does(monkeypatch, tmp_path, variant):
    """``infer()`` of ``process/video_test.py`` on three videos at K = 3 (``val_pos`` True: the next key
    frame first, logits of both key frames summed, the first key frame at v mod 3), and on the first
    with ``val_pos`` False: the runner's order and the method's paths give every frame's prediction."""
    method, _, reference = _golden_method(monkeypatch, tmp_path, "head0", variant)
    protocol = reference["protocol"]
    videos = protocol["videos"] if variant == "official" else protocol["videos"][:1]
    expected = protocol["official"] if variant == "official" else protocol["default"][None]
    items = [{"image": frame.double(), "frame_index": t, "video_index": v, "is_first": t == 0,
              "is_last": t == len(video) - 1} for v, video in enumerate(videos) for t, frame in enumerate(video)]
    keys = []
    step = method.step
    monkeypatch.setattr(method, "step", lambda frame, is_key: keys.append(is_key) or step(frame, is_key))
    with torch.no_grad():
        out = list(stepped(method, method.key_schedule(protocol["k"]), items, torch.device("cpu")))
    assert [(o[0]["video_index"], o[0]["frame_index"]) for o in out] == [(i["video_index"], i["frame_index"])
                                                                         for i in items]  # display order
    scores = torch.stack([o[1][0] for o in out]).reshape(expected.shape)
    assert (scores - expected).abs().max() < TOLERANCE
    key_frames = [[i["frame_index"] for i, _, is_key, _ in out if is_key and i["video_index"] == v]
                  for v in range(len(videos))]
    assert key_frames == ([[0, 3], [1, 4], [2, 5]] if variant == "official" else [[0, 3]])
    if variant == "official":  # the second key frame is stepped before frames 1 and 2
        assert keys[:4] == [True, True, False, False]


def test_a_folder_of_two_iterations_names_them(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    for iteration in (1, 2):
        shutil.copy(GOLDEN / "encoder_epoch_1.pth", logs / f"encoder_epoch_{iteration}.pth")
        shutil.copy(GOLDEN / "head0" / "decoder_epoch_1.pth", logs / f"decoder_epoch_{iteration}.pth")
    with pytest.raises(CheckpointError, match=r"iterations \['1', '2'\]"):
        load_weights(build_method("dcfm:tiny", 5), tmp_path)
    (logs / "decoder_epoch_2.pth").unlink()
    with pytest.raises(CheckpointError, match="decoder_epoch_2.pth beside it"):
        load_weights(build_method("dcfm:tiny", 5), logs / "encoder_epoch_2.pth")


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.randn(4, 1, 3, 64, 96, generator=torch.Generator().manual_seed(seed))


def test_non_key_frames_run_stage_one_alone_and_reuse_the_key_frames_common_feature():
    torch.manual_seed(0)
    method = build_method("dcfm:tiny", 8).eval()
    frames = _frames()
    calls = []
    for stage in method.segmentor.model.segformer.stages[1:]:
        stage.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        method.reset()
        key = method.step(frames[0], True)
        deep_after_key = len(calls)
        nonkey = method.step(frames[1], False)
        assert len(calls) == deep_after_key  # no deep stage ran on the non-key frame
        method.reset()
        again_key = method.step(frames[1], True)
    assert key.shape == nonkey.shape == (1, 8, 64, 96)
    assert not torch.allclose(nonkey, again_key)  # the non-key path is not the key path on the same frame
    method.reset()
    with torch.no_grad():
        assert torch.equal(method.step(frames[0], True), key)  # deterministic


REACHED = {  # what the gradient of the first step must reach, per encoder
    "tiny": ("segmentor.model.segformer.stages.0.patch_embeddings.proj.weight",
             "segmentor.model.segformer.stages.3.blocks.0.mlp.fc1.weight",
             "segmentor.model.decode_head.linear_fuse.weight", "decoder.fusion.conv.weight", "decoder.final.1.weight"),
    "golden": ("encoder.resnet.stem.0.0.weight", "encoder.resnet.stages.3.1.conv2.weight",
               "encoder.ppm.branches.0.1.0.weight", "decoder.bottleneck.weight", "decoder.fusion.conv.weight",
               "decoder.final.4.weight"),
}


@pytest.mark.parametrize("preset", sorted(REACHED))
def test_training_reduces_the_loss_and_reaches_encoder_and_decoder(monkeypatch, preset):
    monkeypatch.setitem(DCFM.presets, "golden", CASES["pspnet18"])  # a ResNet-18 encoder at an eighth of its widths
    torch.manual_seed(0)
    method = build_method(f"dcfm:{preset}", 8).train()
    frames = _frames().reshape(2, 2, 3, 64, 96)
    labels = torch.zeros(2, 2, 64, 96, dtype=torch.long)
    labels[..., 48:] = 3  # the right half is another class, and brighter: learnable from the pixels
    frames[:, :, 0, :, 48:] += 2.0
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)
    weights = {"cross_entropy_key": 1.0, "cross_entropy_nonkey": 0.4, "feature": 0.0, "consistency": 10.0}
    history = []
    for step in range(40):
        terms = method.loss({"frames": frames, "labels": labels})
        assert set(terms) == set(method.loss_terms())
        loss = sum(weights[k] * v for k, v in terms.items())
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name in REACHED[preset]:
                assert dict(method.named_parameters())[name].grad.abs().sum() > 0, name
        optimizer.step()
        history.append(float(loss))
    assert history[-1] < 0.7 * history[0], history


def test_the_resnet_presets_take_their_configs_recipes():
    """exp/cityscapes/dcfm/resnet*/config.yaml and exp/camvid/dcfm/resnet50: SGD, not the MiT configs' AdamW."""
    r18, r101, mit = (build_method(f"dcfm:{p}", 19) for p in ("resnet18", "resnet101", "mitb1"))
    assert recipe_for(r18, "cityscapes", "paper").optimizer == "sgd"
    assert (recipe_for(r18, "cityscapes", "paper").batch_size, recipe_for(r101, "cityscapes", "paper").batch_size) == \
        (32, 16)  # resnet101's config: 4 a process, not 8
    assert recipe_for(mit, "cityscapes", "paper").optimizer == "adamw"
    camvid = recipe_for(build_method("dcfm:resnet50", 11), "camvid", "paper")
    assert (camvid.learning_rate, camvid.iterations, camvid.crop_size, camvid.warmup["iterations"]) == \
        (0.02, 40000, (640, 640), 0)
    with pytest.raises(RecipeError, match="no dcfm recipe for synthetic \\(pspnet\\)"):
        recipe_for(r18, "synthetic", "synthetic")


def test_resnet_presets_count_the_configs_parameters():
    """semseg's PSPNet-18 without its classifier is 11.5M parameters (ResNet-18 without fc 11.18M, pyramid
    pooling 4 x 512 x 128 + batch norms 0.26M); DCFM adds bot_aspp, the fusion module and the head."""
    method = build_method("dcfm:resnet18", 19)
    encoder = sum(p.numel() for p in method.encoder.parameters())
    assert encoder == 11_176_512 + 4 * (512 * 128 + 2 * 128)
    decoder = sum(p.numel() for p in method.decoder.parameters())
    assert decoder == 1024 * 320 + (352 * 320 + 320) + 2 * 320 + (320 * 320 + 2 * 320) + 320 * 19


@pytest.mark.parametrize("either_side", [True, False])
def test_pairs_draw_the_reference_on_either_side_only_when_the_recipe_says(small_synthetic, either_side):
    import dataclasses

    import numpy as np

    from vssbench.benchmark.training import TrainingClips
    from vssbench.datasets.synthetic import load_synthetic
    from vssbench.recipes import recipe_for

    dataset = load_synthetic(small_synthetic, "train")
    recipe = recipe_for(build_method("dcfm:tiny", 8), dataset.name, "synthetic")
    assert recipe.sampling["either_side"] is True
    recipe = dataclasses.replace(recipe, sampling={**recipe.sampling, "either_side": either_side})
    clips = TrainingClips(dataset, recipe, length=64, seed=0)
    gaps = [int(np.diff(clips._frame_indices(clips.videos[i % len(clips.videos)], np.random.default_rng([0, i])))[0])
            for i in range(64)]
    assert all(1 <= abs(gap) <= 9 for gap in gaps)  # (reference, labelled), 1 to 9 frames apart
    assert any(gap < 0 for gap in gaps) == either_side  # a reference after the labelled frame
    assert any(gap > 0 for gap in gaps)


def test_a_trained_segformer_starts_dcfm_its_classifier_dropped_with_the_reason(tmp_path):
    from vssbench.methods.weights import save_checkpoint

    torch.manual_seed(0)
    perframe = build_method("perframe:segformer-tiny", 8)
    save_checkpoint(perframe, tmp_path / "segformer.pt")
    method = build_method("dcfm:tiny", 8)
    record = load_weights(method, tmp_path / "segformer.pt", component="segmentor", purpose="train")
    assert record.dropped == {"the segmentor's classifier, which DCFM's own head replaces": 2}
    assert torch.equal(method.segmentor.model.decode_head.linear_fuse.weight,
                       perframe.segmentor.model.decode_head.linear_fuse.weight)
    with pytest.raises(CheckpointError, match="tensors the target lacks"):  # only that tensor is excused
        state = torch.load(tmp_path / "segformer.pt", weights_only=False)
        state["state_dict"]["segmentor.model.decode_head.extra.weight"] = torch.zeros(1)
        torch.save(state, tmp_path / "extra.pt")
        load_weights(build_method("dcfm:tiny", 8), tmp_path / "extra.pt", component="segmentor", purpose="train")


def _cityscapes_sequence(root, labelled: list[int], frames: int = 5, size: tuple[int, int] = (64, 128)):
    """One Cityscapes sequence of ``frames`` frames with fine labels on the ``labelled`` ones."""
    import numpy as np
    from PIL import Image

    sequence, gt = root / "leftImg8bit_sequence/val/aachen", root / "gtFine/val/aachen"
    sequence.mkdir(parents=True)
    gt.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for frame in range(frames):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            sequence / f"aachen_000001_{frame:06d}_leftImg8bit.png")
    for frame in labelled:
        Image.fromarray(rng.integers(0, 19, size, dtype=np.uint8)).save(
            gt / f"aachen_000001_{frame:06d}_gtFine_labelTrainIds.png")
    return root


def test_cycles_run_each_clip_again_the_first_key_frame_moving_on(monkeypatch, tmp_path):
    """DCFM's Cityscapes test (R: 1, K: 2, cicle: 2): each 3-frame clip twice, its labelled frame non-key
    between two key frames the first time and a key frame the second, both scored."""
    from vssbench.benchmark.runner import EvaluationOptions, evaluate
    from vssbench.datasets.cityscapes import CityscapesDataset
    from vssbench.methods.base import KeySchedule

    dataset = CityscapesDataset.from_root(_cityscapes_sequence(tmp_path, [1, 3]), clip_radius=1)
    assert [[f.image.name[14:20] for f in video.frames] for video in dataset.videos] == [
        ["000000", "000001", "000002"], ["000002", "000003", "000004"]]
    method = build_method("dcfm:tiny", 19, "official")
    steps, step = [], method.step
    monkeypatch.setattr(method, "step", lambda frame, is_key: steps.append(is_key) or step(frame, is_key))
    once = evaluate(method, dataset, method.key_schedule(2), EvaluationOptions(progress=False, speed_rounds=0))
    # once: the second clip starts one frame later (its labelled frame a key frame)
    assert steps == [True, True, False, True, False, False] and once.metrics["frames_evaluated"] == 2
    steps.clear()
    twice = evaluate(method, dataset, KeySchedule(2, rotate=True, cycles=2), EvaluationOptions(progress=False))
    # runs 0..3 start at frames 0, 1, 0, 1: keys 0 and 2 (stepped before frame 1), then key 1 first; each
    # clip's labelled frame is scored once as a non-key frame and once as a key frame
    assert steps == [True, True, False, True, False, False] * 2
    assert twice.metrics["frames_evaluated"] == 4 and twice.metrics["miou"] != once.metrics["miou"]
    with pytest.raises(ValueError, match="2 cycles"):
        evaluate(method, dataset, KeySchedule(2, rotate=True, cycles=2), EvaluationOptions(progress=False),
                 tmp_path / "predictions")


def test_bench_run_takes_the_official_cityscapes_protocol_and_records_it(tmp_path, capsys):
    import json

    from vssbench.cli import main

    root = _cityscapes_sequence(tmp_path / "cityscapes", [1, 3])
    common = ["run", "--methods", "dcfm:tiny", "--dataset", "cityscapes", "--data-root", str(root), "--intervals",
              "2", "--random-weights", "--speed-rounds", "0", "--quiet"]
    official = ["--variants", "official", "--clip-radius", "1", "--resize", "short:32", "--cycles", "2",
                "--miou-mode", "all"]
    assert main([*common, *official, "--output", str(tmp_path / "official.jsonl")]) == 0
    assert main([*common, "--clip-radius", "1", "--output", str(tmp_path / "plain.jsonl")]) == 0
    row = json.loads((tmp_path / "official.jsonl").read_text())
    plain = json.loads((tmp_path / "plain.jsonl").read_text())
    assert row["schedule"] == {"type": "interval", "key_interval": 2, "offset": 0, "rotate_offset": True, "cycles": 2}
    assert row["videos"]["clip_radius"] == 1 and row["videos"]["count"] == 2
    assert row["resolution"] == "short side 32, labels at their own size" and plain["resolution"] == "native"
    assert row["metrics"]["frames_evaluated"] == 4 and plain["metrics"]["frames_evaluated"] == 2
    assert row["cost"]["gflops_key"] < plain["cost"]["gflops_key"] / 3  # 32 x 64 frames instead of 64 x 128
    for bad, message in ((["--cycles", "0"], "--cycles 0: expected a positive integer"),
                         (["--clip-radius", "-1"], "--clip-radius -1: expected an integer >= 0"),
                         (["--cycles", "2", "--save-predictions", str(tmp_path / "p")], "would overwrite")):
        assert main([*common, *bad, "--output", str(tmp_path / "bad.jsonl")]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*common, "--resize", "short:x", "--output", str(tmp_path / "bad.jsonl")])
    assert exit_.value.code == 2 and "expected keep-ratio, exact or short:N" in capsys.readouterr().err
    assert main(["run", "--methods", "copy", "--clip-radius", "1", "--random-weights", "--output",
                 str(tmp_path / "bad.jsonl")]) == 2
    assert "--clip-radius: only with --dataset cityscapes" in capsys.readouterr().err


def test_short_side_is_torchvisions_resize_rule():
    from vssbench.datasets.transforms import short_side_size

    # torchvision's Resize(n): the shorter side n, the longer int(n * long / short)
    assert short_side_size(1024, 2048, 512) == (512, 1024)
    assert short_side_size(720, 960, 768) == (768, 1024)
    assert short_side_size(480, 853, 512) == (512, 909)
    assert short_side_size(853, 480, 512) == (909, 512)
