"""Bring your own weights: Hugging Face models against transformers itself, vssbench checkpoints, bad
files, partial initialisation, and the command line (``--checkpoint``, ``--init``, ``bench convert``,
``--random-weights``)."""

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from transformers import (
    Mask2FormerForUniversalSegmentation,
    Mask2FormerImageProcessor,
    ResNetBackbone,
    ResNetConfig,
    ResNetForImageClassification,
    SegformerConfig,
    SegformerForImageClassification,
    SegformerForSemanticSegmentation,
    SwinBackbone,
    SwinConfig,
    SwinForImageClassification,
)

from vssbench.benchmark.results import load_rows
from vssbench.cli import main
from vssbench.datasets.base import FrameStream
from vssbench.datasets.synthetic import load_synthetic
from vssbench.methods.base import build_method
from vssbench.methods.perframe import PerFrame
from vssbench.methods.segmentors import SEGMENTORS
from vssbench.methods.weights import (
    LEGACY_CHECKPOINT_FORMAT,
    CheckpointError,
    load_weights,
    random_parameters,
    save_checkpoint,
)

TINY = SEGMENTORS["segformer-tiny"][1]


def _randomise_norm_statistics(model: torch.nn.Module, seed: int = 0) -> None:
    """Batch-norm running statistics away from their initial 0 / 1, so that loading them is tested too."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def _hf_segformer(num_labels: int = 8, seed: int = 0, **config) -> SegformerForSemanticSegmentation:
    torch.manual_seed(seed)
    model = SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_labels, **{**TINY, **config})).eval()
    _randomise_norm_statistics(model, seed)
    return model


def _perframe(preset: str = "segformer-tiny", num_classes: int = 8):
    torch.manual_seed(1)  # not the seed the weights were made with
    return build_method(f"perframe:{preset}", num_classes).eval()


def _frame(height: int = 64, width: int = 96) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("layout", ["safetensors", "bin", "sharded", "bare-safetensors", "in-memory-names"])
def test_hugging_face_segformer_computes_what_transformers_computes(tmp_path, layout):
    hf = _hf_segformer()
    if layout in ("safetensors", "bin", "sharded"):
        hf.save_pretrained(tmp_path, safe_serialization=layout != "bin",
                           **({"max_shard_size": "200KB"} if layout == "sharded" else {}))
        path = tmp_path
        if layout == "sharded":
            assert (tmp_path / "model.safetensors.index.json").is_file()
    elif layout == "bare-safetensors":  # the file alone, hub (on-disk) key names, no config.json
        hf.save_pretrained(tmp_path / "folder")
        path = tmp_path / "model.safetensors"
        os.replace(tmp_path / "folder" / "model.safetensors", path)
    else:  # what torch.save(model.state_dict()) writes under transformers 5: its in-memory names
        path = tmp_path / "weights.bin"
        torch.save(hf.state_dict(), path)
    method = _perframe()
    record = load_weights(method, path)
    frame = _frame()
    with torch.no_grad():
        expected = F.interpolate(hf(pixel_values=frame).logits, size=frame.shape[-2:], mode="bilinear",
                                 align_corners=False)
        assert (method.step(frame, True) - expected).abs().max() <= 1e-5
    assert record.format == "hf-segformer" and not random_parameters(method, [record])


def test_hugging_face_mask2former_computes_what_transformers_computes(tmp_path):
    ours = _perframe("mask2former-tiny")
    torch.manual_seed(3)
    hf = Mask2FormerForUniversalSegmentation(ours.segmentor.config).eval()
    _randomise_norm_statistics(hf)
    hf.save_pretrained(tmp_path)
    load_weights(ours, tmp_path)
    frame = _frame()
    with torch.no_grad():
        outputs = hf(pixel_values=frame)
        decoded = ours.segmentor.decode_queries(ours.segmentor.extract(frame), frame.shape[-2:])
    assert (decoded.class_logits - outputs.class_queries_logits).abs().max() <= 1e-5
    assert (decoded.mask_logits - outputs.masks_queries_logits).abs().max() <= 1e-5
    semantic = Mask2FormerImageProcessor().post_process_semantic_segmentation(outputs, target_sizes=[(64, 96)])[0]
    assert torch.equal(decoded.semantic[0].argmax(0), semantic)


def test_a_hugging_face_config_of_another_architecture_names_the_field(tmp_path):
    _hf_segformer(depths=[2, 1, 1, 1]).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"config.json: depths is \[2, 1, 1, 1\], the preset's is \[1, 1, 1, 1\]"):
        load_weights(_perframe(), tmp_path)


def test_a_class_count_mismatch_fails_evaluation_and_reinitialises_the_classifier_only_when_asked(tmp_path):
    _hf_segformer(num_labels=5).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="classifier .* has 5 outputs, the data 8 classes"):
        load_weights(_perframe(), tmp_path)
    with pytest.raises(CheckpointError, match="--reinit-classifier"):
        load_weights(_perframe(), tmp_path, purpose="train")
    method = _perframe()
    record = load_weights(method, tmp_path, purpose="train", reinit_classifier=True)
    assert record.reinitialised == ["model.decode_head.classifier.bias", "model.decode_head.classifier.weight"]
    assert random_parameters(method, [record]) == {"segmentor": 8 * 64 + 8}  # the classifier alone


def test_hugging_face_imagenet_backbones_initialise_the_segmentor_backbones(tmp_path, monkeypatch):
    """MiT, Swin and ResNet classifiers as the hub holds them (nvidia/mit-b0, microsoft/swin-*, microsoft/resnet-*),
    against transformers' own models and backbones loaded from the same folders."""
    frame = _frame()
    torch.manual_seed(4)
    mit = SegformerForImageClassification(SegformerConfig(num_labels=10, **TINY)).eval()
    mit.save_pretrained(tmp_path / "mit")
    method = _perframe()
    record = load_weights(method, tmp_path / "mit", purpose="train")
    assert (record.component, record.format, record.dropped) == ("backbone", "hf-mit", {"ImageNet classifier": 2})
    with torch.no_grad():
        theirs = mit.segformer(pixel_values=frame, output_hidden_states=True).hidden_states
        for ours, reference in zip(method.segmentor.extract(frame), theirs, strict=True):
            assert (ours - reference).abs().max() <= 1e-5

    mask2former, tiny = SEGMENTORS["mask2former-tiny"]
    swin = dict(embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2], window_size=4)
    resnet = dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic")
    for name, classifier, backbone, config in (
            ("swin", SwinForImageClassification, SwinBackbone, SwinConfig(num_labels=10, **swin)),
            ("resnet", ResNetForImageClassification, ResNetBackbone, ResNetConfig(num_labels=10, **resnet))):
        torch.manual_seed(5)
        model = classifier(config).eval()
        _randomise_norm_statistics(model)
        model.save_pretrained(tmp_path / name)
        preset = f"test-mask2former-{name}"
        monkeypatch.setitem(SEGMENTORS, preset, (mask2former, dict(tiny, backbone=dict(
            type=name, **(swin if name == "swin" else resnet)))))
        monkeypatch.setitem(PerFrame.presets, preset, {})
        method = _perframe(preset)
        record = load_weights(method, tmp_path / name, component="backbone", purpose="train")
        assert record.format == f"hf-{name}"
        reference = backbone.from_pretrained(tmp_path / name, out_features=["stage1", "stage2", "stage3", "stage4"])
        with torch.no_grad():
            ours = method.segmentor.model.model.pixel_level_module.encoder(frame).feature_maps
            for mine, theirs in zip(ours, reference.eval()(frame).feature_maps, strict=True):
                assert (mine - theirs).abs().max() <= 1e-5, name


# --------------------------------------------------------------------------- vssbench checkpoints


def test_vssbench_checkpoints_store_hub_names_and_load_back_exactly(tmp_path):
    method = _perframe()
    load_weights(method, _saved_hf(tmp_path))
    path = save_checkpoint(method, tmp_path / "ours.pt")
    payload = torch.load(path, weights_only=True)
    hub_name = "segmentor.model.segformer.encoder.block.0.0.attention.self.query."
    assert any(k.startswith(hub_name) for k in payload["state_dict"])
    again = _perframe()
    load_weights(again, path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in method.state_dict().items())


def test_legacy_checkpoints_load_unless_the_architecture_changed_since(tmp_path):
    segformer = _perframe()
    torch.save({"format": LEGACY_CHECKPOINT_FORMAT, "method": "perframe", "preset": "segformer-tiny",
                "variant": "default", "num_classes": 8, "state_dict": segformer.state_dict()}, tmp_path / "old.pt")
    load_weights(_perframe(), tmp_path / "old.pt")
    pspnet = _perframe("pspnet-tiny")
    torch.save({"format": LEGACY_CHECKPOINT_FORMAT, "method": "perframe", "preset": "pspnet-tiny",
                "variant": "default", "num_classes": 8, "state_dict": pspnet.state_dict()}, tmp_path / "old-psp.pt")
    with pytest.raises(CheckpointError, match="PSPNet/1 .* this vssbench computes PSPNet/2"):
        load_weights(_perframe("pspnet-tiny"), tmp_path / "old-psp.pt")


# --------------------------------------------------------------------------- bad files


class HistoryBuffer:
    """Stands for a class a training framework pickles into its checkpoints (mmengine's message hub)."""

    def __init__(self) -> None:
        self.values = [1.0]


class _WritesAFile:
    def __reduce__(self):
        return (os.system, ("touch vssbench-pickle-ran",))


def test_bad_weights_files_are_named_with_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="without config.json; expected a Hugging Face model folder"):
        load_weights(_perframe(), tmp_path / "empty")
    (tmp_path / "config-only").mkdir()
    (tmp_path / "config-only" / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    with pytest.raises(CheckpointError, match="has config.json but no weights"):
        load_weights(_perframe(), tmp_path / "config-only")
    save_file({"a": torch.zeros(1000)}, tmp_path / "whole.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "whole.safetensors").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.safetensors as safetensors .* truncated"):
        load_weights(_perframe(), tmp_path / "cut.safetensors")
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage bytes")
    with pytest.raises(CheckpointError, match="garbage.pth: not a safetensors, PyTorch or pickle file") as caught:
        load_weights(_perframe(), tmp_path / "garbage.pth")
    assert "weights_only=False" not in str(caught.value)
    with open(tmp_path / "list.pkl", "wb") as handle:
        pickle.dump([1, 2, 3], handle)
    with pytest.raises(CheckpointError, match="list.pkl holds a list, not a dictionary of weights"):
        load_weights(_perframe(), tmp_path / "list.pkl")
    with open(tmp_path / "unknown.pth", "wb") as handle:
        pickle.dump({"model": {"some.layer.weight": np.zeros(3, np.float32)}}, handle)
    with pytest.raises(CheckpointError, match="weights of no format vssbench knows .*some.layer.weight"):
        load_weights(_perframe(), tmp_path / "unknown.pth")


def test_pickles_are_read_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"model": {"x": _WritesAFile()}}, handle)
    torch.save({"state_dict": {"x": torch.zeros(1)}, "hook": _WritesAFile()}, tmp_path / "evil.pth")
    for name in ("evil.pkl", "evil.pth"):
        with pytest.raises(CheckpointError, match="will not unpickle|vssbench reads only pickles"):
            load_weights(_perframe(), tmp_path / name)
    assert not (tmp_path / "vssbench-pickle-ran").exists()


def test_a_checkpoint_that_pickles_bookkeeping_classes_still_loads(tmp_path):
    hf = _hf_segformer()
    state = {f"{k}": v for k, v in hf.state_dict().items()}
    torch.save({"state_dict": state, "message_hub": {"log": HistoryBuffer()}, "meta": {"epoch": 3}},
               tmp_path / "framework.pth")
    record = load_weights(_perframe(), tmp_path / "framework.pth")
    assert record.format == "hf-segformer"


# --------------------------------------------------------------------------- components


def test_a_segmentor_alone_is_not_a_whole_video_method(tmp_path):
    dff = build_method("dff:tiny", 8)
    record = load_weights(dff, _saved_hf(tmp_path))
    assert (record.component, record.module) == ("segmentor", "segmentor")
    assert set(random_parameters(dff, [record])) == {"feature_flow"}


def test_accel_sends_each_file_to_the_part_it_fits(tmp_path):
    accel = build_method("accel:tiny", 8)
    assert load_weights(accel, _saved_hf(tmp_path)).module == "reference.segmentor"
    psp = save_checkpoint(build_method("perframe:pspnet-tiny", 8), tmp_path / "psp.pt")
    assert load_weights(accel, psp, purpose="train").module == "update"  # its per-frame update branch
    with pytest.raises(CheckpointError, match="has no component 'nonsense'"):
        load_weights(accel, psp, component="nonsense")


# --------------------------------------------------------------------------- command line


def _saved_hf(tmp_path: Path, preset: str = "segformer-tiny", name: str = "hf") -> Path:
    config = {k: v for k, v in SEGMENTORS[preset][1].items()}
    if not (tmp_path / name).exists():
        _hf_segformer(**config).save_pretrained(tmp_path / name)
    return tmp_path / name


def _hub_to_nvlabs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write Hugging Face SegFormer tensors (hub names) in NVlabs's layout, as its checkpoints hold them."""
    out = {}
    for key, tensor in state.items():
        if ".attention.self.value." in key:
            continue
        if ".attention.self.key." in key:
            value = state[key.replace(".key.", ".value.")]
            key, tensor = key.replace(".attention.self.key.", ".attn.kv."), torch.cat([tensor, value])
        name = key
        for pattern, replacement in (
                (r"^segformer\.encoder\.patch_embeddings\.(\d)\.", lambda m: f"backbone.patch_embed{int(m[1]) + 1}."),
                (r"^segformer\.encoder\.block\.(\d)\.", lambda m: f"backbone.block{int(m[1]) + 1}."),
                (r"^segformer\.encoder\.layer_norm\.(\d)\.", lambda m: f"backbone.norm{int(m[1]) + 1}."),
                (r"\.layer_norm_1\.", ".norm1."), (r"\.layer_norm_2\.", ".norm2."),
                (r"(patch_embed\d)\.layer_norm\.", r"\1.norm."),
                (r"\.attention\.self\.query\.", ".attn.q."), (r"\.attention\.self\.sr\.", ".attn.sr."),
                (r"\.attention\.self\.layer_norm\.", ".attn.norm."), (r"\.attention\.output\.dense\.", ".attn.proj."),
                (r"\.mlp\.dense1\.", ".mlp.fc1."), (r"\.mlp\.dense2\.", ".mlp.fc2."),
                (r"^decode_head\.linear_c\.(\d)\.", lambda m: f"decode_head.linear_c{int(m[1]) + 1}."),
                (r"^decode_head\.linear_fuse\.weight", "decode_head.linear_fuse.conv.weight"),
                (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
                (r"^decode_head\.classifier\.", "decode_head.linear_pred.")):
            name = re.sub(pattern, replacement, name)
        out[name] = tensor
    return out


def _predictions(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): np.array(Image.open(p)) for p in sorted(folder.rglob("*.png"))}


def test_bench_run_with_a_hugging_face_folder_gives_the_transformers_predictions(small_synthetic, tmp_path):
    """The acceptance check: an HF SegFormer-B0 with 8 labels; the same weights in NVlabs's layout too."""
    from safetensors.torch import load_file

    hf = _hf_segformer(**SEGMENTORS["segformer-b0"][1])
    hf.save_pretrained(tmp_path / "b0")
    nvlabs = _hub_to_nvlabs(load_file(tmp_path / "b0" / "model.safetensors"))
    torch.save({"meta": {}, "state_dict": nvlabs}, tmp_path / "b0-nvlabs.pth")
    runs = {}
    for name, path in (("hf", tmp_path / "b0"), ("nvlabs", tmp_path / "b0-nvlabs.pth")):
        assert main(["run", "--methods", "perframe:segformer-b0", "--data-root", str(small_synthetic),
                     "--max-videos", "1", "--checkpoint", str(path), "--output", str(tmp_path / f"{name}.jsonl"),
                     "--save-predictions", str(tmp_path / name), "--num-workers", "0", "--speed-rounds", "0"]) == 0
        runs[name] = _predictions(tmp_path / name)
        (row,) = load_rows(tmp_path / f"{name}.jsonl")
        assert row["weights"] == "trained" and row["checkpoint"]["sources"][0]["format"] == f"{name}-segformer"
    dataset = load_synthetic(small_synthetic, "val")
    dataset.videos = dataset.videos[:1]
    expected = {}
    with torch.no_grad():
        for item in FrameStream(dataset):
            logits = hf(pixel_values=item["image"][None]).logits
            label = F.interpolate(logits, size=item["label"].shape, mode="bilinear", align_corners=False)
            expected[f"perframe_segformer-b0_k1/{item['video']}/{item['stem']}.png"] = label[0].argmax(0).numpy()
    assert runs["hf"].keys() == expected.keys()
    assert all(np.array_equal(runs["hf"][k], expected[k]) for k in expected)
    # NVlabs's own layer-norm epsilon (1e-6 in the blocks) moves logits by about 1e-6: the argmax agrees.
    assert all(np.array_equal(runs["nvlabs"][k], expected[k]) for k in expected)


def test_bench_convert_writes_a_checkpoint_that_runs_and_says_where_it_came_from(small_synthetic, tmp_path, capsys):
    source = _saved_hf(tmp_path)
    assert main(["convert", str(source), "--method", "perframe:segformer-tiny", "--out", str(tmp_path / "c.pt")]) == 0
    assert "8 classes" in capsys.readouterr().out
    assert main(["run", "--methods", "perframe:segformer-tiny", "--data-root", str(small_synthetic),
                 "--max-videos", "1", "--checkpoint", str(tmp_path / "c.pt"), "--output", str(tmp_path / "r.jsonl"),
                 "--num-workers", "0", "--speed-rounds", "0"]) == 0
    (row,) = load_rows(tmp_path / "r.jsonl")
    (origin,) = row["checkpoint"]["declared"]["converted_from"]  # what c.pt says of itself
    assert origin["format"] == "hf-segformer" and origin["file"] == str(source) and len(origin["sha256"]) == 64
    (verified,) = row["checkpoint"]["sources"]  # what vssbench read: c.pt itself
    assert verified["format"] == "vssbench" and verified["files"] == [
        {"file": str(tmp_path / "c.pt"), "sha256": row["checkpoint"]["sha256"]}]
    assert main(["convert", str(source), "--method", "dff:tiny", "--out", str(tmp_path / "d.pt")]) == 2
    assert "feature_flow" in capsys.readouterr().err and not (tmp_path / "d.pt").exists()


def test_off_the_synthetic_set_random_weights_are_refused_unless_asked_and_then_marked(vspw_copy, small_synthetic,
                                                                                        tmp_path,
                                                                                        capsys):
    root = vspw_copy
    common = ["run", "--methods", "perframe:segformer-tiny", "--dataset", "vspw", "--data-root", str(root),
              "--max-videos", "1", "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0",
              "--speed-rounds", "0"]
    assert main(common) == 2
    error = capsys.readouterr().err
    assert "no weights for perframe:segformer-tiny on vspw" in error and "--checkpoint" in error
    assert not (tmp_path / "rows.jsonl").exists()
    assert main([*common, "--random-weights"]) == 0
    (row,) = load_rows(tmp_path / "rows.jsonl")
    assert row["weights"] == "random" and list(row["random_parameters"]) == ["segmentor"]
    assert main(["report", str(tmp_path / "rows.jsonl"), "--out", str(tmp_path / "report"), "--format", "md"]) == 0
    assert "perframe [random weights]" in (tmp_path / "report" / "comparison_vspw.md").read_text()


def test_bench_run_refuses_a_checkpoint_that_leaves_parts_random(small_synthetic, tmp_path, capsys):
    source = _saved_hf(tmp_path)
    command = ["run", "--methods", "dff:tiny", "--data-root", str(small_synthetic), "--max-videos", "1",
               "--checkpoint", str(source), "--output", str(tmp_path / "rows.jsonl"), "--num-workers", "0",
               "--intervals", "2", "--speed-rounds", "0"]
    assert main(command) == 2
    assert "feature_flow" in capsys.readouterr().err and not (tmp_path / "rows.jsonl").exists()
    assert main([*command, "--random-weights"]) == 0
    (row,) = load_rows(tmp_path / "rows.jsonl")
    assert row["weights"] == "random" and set(row["random_parameters"]) == {"feature_flow"}


def test_bench_train_initialises_components_and_reinitialises_a_classifier_when_told(small_synthetic, tmp_path,
                                                                                    capsys):
    five = _hf_segformer(num_labels=5)
    five.save_pretrained(tmp_path / "five")
    command = ["train", "--method", "dff:tiny", "--data-root", str(small_synthetic), "--iters", "1",
               "--init", f"segmentor={tmp_path / 'five'}", "--out", str(tmp_path / "dff.pt"), "--num-workers", "0"]
    assert main(command) == 2
    assert "--reinit-classifier" in capsys.readouterr().err and not (tmp_path / "dff.pt").exists()
    assert main([*command, "--reinit-classifier"]) == 0
    out = capsys.readouterr().out
    assert "classifier re-initialised: 5 classes in the file, 8 in the data" in out
    payload = torch.load(tmp_path / "dff.pt", weights_only=True)
    (start,) = payload["metadata"]["started_from"]
    assert start["weights"]["format"] == "hf-segformer" and start["weights"]["reinitialised"]
    assert main(["train", "--method", "dff:tiny", "--data-root", str(small_synthetic), "--iters", "1",
                 "--init", "bogus=x", "--out", str(tmp_path / "x.pt")]) == 2
