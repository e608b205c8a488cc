"""Weights of the field's formats compute what their source code computes (golden files).

The reference libraries do not install in CI time (mmsegmentation needs mmcv, Mask2Former needs
detectron2, NVlabs's SegFormer an mmseg 0.x fork), so the files in ``tests/golden/`` were made once,
outside this repository, by running each reference implementation itself on tiny configurations
with random weights (seeded), random batch-norm statistics and fixed inputs; only the weights, in
the format each code writes them, and its outputs were kept. Outputs are in float64 (the float32
weights cast exactly), so that a comparison measures the computation, not rounding; the tolerance
is 1e-10.

* ``pspnet_r18_tiny.pth``, ``pspnet_r50_thin.pth``: mmsegmentation 1.2.2 (mmcv-lite 2.1), an
  ``EncoderDecoder`` with ResNetV1c (depth 18, stem 16, base width 8 / depth 50, stem 16, base 4;
  ``contract_dilation=True``, dilations 1, 1, 2, 4), PSPHead and the auxiliary FCNHead;
  reference: ``encode_decode`` logits on a 32x48 input.
* ``segformer_nvlabs.pth``, ``segformer_cffm.pth``, ``segformer_mmseg.pth`` (``scripts/golden_segformer.py``,
  on 64 x 96 inputs, large enough that every tensor but a key bias moves the output):
  NVlabs/SegFormer's ``MixVisionTransformer`` (widths 16, 32, 48, 64, heads 1..4, depths 2, 1, 1, 1,
  qkv bias, LayerNorm eps 1e-6 as its ``mit_b*``) and ``SegFormerHead`` (width 32), imported from
  NVlabs's repository on mmcv 1.7; reference: the logits of encode_decode and
  (``mit_nvlabs_reference.pt``) the backbone's four feature maps. The same backbone class from
  GuoleiSun/VSS-CFFM with its ``CFFMHead_clips_resize1_8``; reference: the head on a clip of one
  frame, where CFFM runs its per-frame SegFormer branch. mmsegmentation 0.30's ``MixVisionTransformer``
  holding the NVlabs backbone, converted by mmseg's own ``tools/model_converters/mit2mmseg.py``, and
  its ``SegformerHead`` (width 32); reference: logits and (``mit_mmseg_reference.pt``) features.
* ``mask2former_swin_d2.pkl``, ``mask2former_r50_d2.pth``: facebookresearch/Mask2Former on
  detectron2 (built from source; deformable attention in its pure-PyTorch fallback): ``MaskFormer``
  with ``D2SwinTransformer`` (embed 8, depths 2, 2, 2, 2, window 4) or detectron2's ResNet-50
  (stem 16, res2 16, width per group 4, STRIDE_IN_1X1 False), the MSDeformAttn pixel decoder (1
  layer, 32 channels) and the masked-attention decoder (3 layers, 16 queries); the Swin weights as
  the model zoo's pickle of NumPy arrays, the ResNet's as ``DetectionCheckpointer`` saves them.
  Reference: ``forward()``'s ``sem_seg`` for a 32x64 image and a 28x44 one (which detectron2 pads
  to 32x64), in float64 with detectron2's float32 position embeddings and reference points built
  in float64 too.
* ``swin_official.pth``: microsoft/Swin-Transformer's ``SwinTransformer`` (embed 8, window 4,
  img_size 128) as its ImageNet checkpoints are saved (``{"model": ...}``); reference: the
  features of Mask2Former's ``D2SwinTransformer`` after loading it as Mask2Former does (new output
  norms at LayerNorm's initialisation).
* ``resnet_torchvision.pth``, ``resnet_d2.pkl``: a thin ResNet-50 in torchvision's state-dict
  layout and detectron2's ``tools/convert-torchvision-to-d2.py`` conversion of it; reference: the
  features of detectron2's ResNet (FrozenBN) with the converted weights loaded strictly.
* ``flownets_flownetpytorch.pth.tar``, ``flownet_simple_mmtracking.pth``: ClementPinard/
  FlowNetPytorch's ``flownets`` and mmtracking's ``FlowNetSimple`` at 1/16 of FlowNetS's widths
  (through FlowNetPytorch's own conv helpers and FlowNetSimple's ``arch_setting``); references:
  FlowNetPytorch's ``flow2`` for a 6-channel input, and mmtracking's ``forward`` (which undoes the
  ImageNet normalisation, centres by the FlyingChairs mean, halves the pair and scales the flow) on
  a pair of ImageNet-normalised frames.
"""

import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vssbench.methods.base import build_method
from vssbench.methods.dff import DFF
from vssbench.methods.flownet import FlowNetS, FlowNetSEncoder
from vssbench.methods.mpvss import MPVSS
from vssbench.methods.perframe import PerFrame
from vssbench.methods.segmentors import SEGMENTORS, Mask2Former, PSPNet, SegFormer
from vssbench.methods.weights import CheckpointError, load_weights, read_source, save_checkpoint

GOLDEN = Path(__file__).parent / "golden"
TOLERANCE = 1e-10
MIT = dict(hidden_sizes=[16, 32, 48, 64], depths=[2, 1, 1, 1], num_attention_heads=[1, 2, 3, 4], decoder_hidden_size=32)
M2F_DECODER = dict(feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=1024,
                   dim_feedforward=64, encoder_layers=1, decoder_layers=4, num_attention_heads=2, num_queries=16)
PRESETS = {  # the golden files' architectures, as segmentor presets
    "golden-pspnet-r18": (PSPNet, dict(block="basic", depths=[2, 2, 2, 2], widths=[8, 16, 32, 64], stem_width=16,
                                       head_channels=16)),
    "golden-pspnet-r50": (PSPNet, dict(block="bottleneck", depths=[3, 4, 6, 3], widths=[4, 8, 16, 32], stem_width=16,
                                       head_channels=16)),
    "golden-segformer": (SegFormer, MIT),
    "golden-segformer-mmseg": (SegFormer, dict(MIT, head="mmseg", layer_norm_eps=dict.fromkeys(
        ("patch_embeddings", "blocks", "sequence_reduction", "stages"), 1e-6))),
    "golden-mask2former-swin": (Mask2Former, dict(backbone=dict(type="swin", embed_dim=8, depths=[2, 2, 2, 2],
                                                                num_heads=[1, 1, 2, 2], window_size=4,
                                                                drop_path_rate=0.0), **M2F_DECODER)),
    "golden-mask2former-r50": (Mask2Former, dict(backbone=dict(type="resnet", layer_type="bottleneck",
                                                               embedding_size=16, depths=[3, 4, 6, 3],
                                                               hidden_sizes=[16, 32, 64, 128]), **M2F_DECODER)),
    "golden-mask2former-r50-stem8": (Mask2Former, dict(backbone=dict(type="resnet", layer_type="bottleneck",
                                                                     embedding_size=8, depths=[3, 4, 6, 3],
                                                                     hidden_sizes=[16, 32, 64, 128]), **M2F_DECODER)),
}
FLOWNET = dict(widths=(4, 8, 16, 32, 32, 64), deconv=(4, 8, 16, 32))


@pytest.fixture(autouse=True)
def golden_presets(monkeypatch):
    for name, entry in PRESETS.items():
        monkeypatch.setitem(SEGMENTORS, name, entry)
        monkeypatch.setitem(PerFrame.presets, name, {})
    monkeypatch.setitem(DFF.presets, "golden", dict(segmentor="golden-segformer", flownet=FLOWNET))
    monkeypatch.setitem(MPVSS.presets, "golden", dict(
        segmentor="golden-mask2former-r50", flownet=FLOWNET,
        motion=dict(hidden=32, heads=2, ffn=64, rounds=3, encoder_widths=FLOWNET["widths"], pixel_deconv=(4, 8, 8, 8))))


def _perframe(preset: str, num_classes: int = 8):
    torch.manual_seed(0)
    return build_method(f"perframe:{preset}", num_classes).eval()


def _close(ours: torch.Tensor, reference: torch.Tensor) -> float:
    assert ours.shape == reference.shape
    return (ours - reference).abs().max().item()


@pytest.mark.parametrize("name,preset", [
    ("pspnet_r18_tiny", "golden-pspnet-r18"), ("pspnet_r50_thin", "golden-pspnet-r50"),
    ("segformer_nvlabs", "golden-segformer"), ("segformer_cffm", "golden-segformer"),
    ("segformer_mmseg", "golden-segformer-mmseg"),
])
def test_mmseg_nvlabs_and_cffm_weights_compute_what_their_code_computes(name, preset):
    method = _perframe(preset)
    record = load_weights(method, GOLDEN / f"{name}.pth")
    reference = torch.load(GOLDEN / f"{name}_reference.pt", weights_only=True)
    with torch.no_grad():
        logits = method.double().step(reference["input"].double(), True)
    assert _close(logits, reference["logits"]) < TOLERANCE
    assert record.component == "segmentor" and record.mapped == len(method.state_dict())
    if name.startswith("pspnet"):
        assert record.dropped == {"auxiliary FCN head (training only)": 8}
    if name == "segformer_cffm":
        assert any("temporal head" in reason for reason in record.dropped) and record.notes


def test_nvlabs_layer_norm_convention_is_what_makes_the_match_exact():
    """NVlabs's MiT uses LayerNorm eps 1e-6 where Hugging Face uses 1e-5; without adopting it the same
    weights compute something measurably different."""
    method = _perframe("golden-segformer")
    load_weights(method, GOLDEN / "segformer_nvlabs.pth")
    reference = torch.load(GOLDEN / "segformer_nvlabs_reference.pt", weights_only=True)
    method.segmentor.set_layer_norm_eps(dict.fromkeys(method.segmentor.layer_norm_eps, 1e-5))
    with torch.no_grad():
        logits = method.double().step(reference["input"].double(), True)
    assert _close(logits, reference["logits"]) > 10 * TOLERANCE  # the golden comparison would fail


def test_the_same_mit_in_nvlabs_and_mmseg_layouts_loads_to_the_same_tensors():
    nvlabs, mmseg = _perframe("golden-segformer"), _perframe("golden-segformer-mmseg")
    load_weights(nvlabs, GOLDEN / "segformer_nvlabs.pth")
    load_weights(mmseg, GOLDEN / "segformer_mmseg.pth")
    encoder = {k: v for k, v in nvlabs.state_dict().items() if ".segformer." in k}
    assert encoder and all(torch.equal(v, mmseg.state_dict()[k]) for k, v in encoder.items())


def test_pspnet_weights_would_compute_another_network_under_full_dilation():
    """mmseg's contract_dilation matters: with every block fully dilated (the architecture before this
    revision) the same weights give other logits."""
    from vssbench.methods.segmentors.pspnet import DilatedResNet

    method = _perframe("golden-pspnet-r18")
    load_weights(method, GOLDEN / "pspnet_r18_tiny.pth")
    state = method.segmentor.backbone.state_dict()
    method.segmentor.backbone = DilatedResNet("basic", [2, 2, 2, 2], [8, 16, 32, 64], 16, style="deeplab")
    method.segmentor.backbone.load_state_dict(state)
    reference = torch.load(GOLDEN / "pspnet_r18_tiny_reference.pt", weights_only=True)
    with torch.no_grad():
        assert _close(method.eval().double().step(reference["input"].double(), True), reference["logits"]) > 1e-3


@pytest.mark.parametrize("name,preset", [("mask2former_swin_d2.pkl", "golden-mask2former-swin"),
                                         ("mask2former_r50_d2.pth", "golden-mask2former-r50")])
def test_detectron2_mask2former_computes_what_detectron2_computes_padding_included(name, preset):
    method = _perframe(preset)
    record = load_weights(method, GOLDEN / name)
    assert record.format == "detectron2-mask2former"
    references = torch.load(GOLDEN / name.replace(".pkl", "_reference.pt").replace(".pth", "_reference.pt"),
                            weights_only=True)
    method.double()
    for size, reference in references.items():  # 32x64 and 28x44, which detectron2 pads to 32x64
        with torch.no_grad():
            assert _close(method.step(reference["input"], True), reference["semantic"]) < TOLERANCE, size


def test_an_mpvss_checkpoint_loads_its_mask2former_and_names_the_flow_module_it_drops(tmp_path):
    state = torch.load(GOLDEN / "mask2former_r50_d2.pth", weights_only=True)["model"]
    state["sem_seg_head.motion_encoder.conv1.0.conv.weight"] = torch.zeros(4, 6, 7, 7)
    torch.save({"model": state}, tmp_path / "mpvss.pth")
    record = load_weights(_perframe("golden-mask2former-r50"), tmp_path / "mpvss.pth")
    assert record.dropped["MPVSS flow module (no released layout to map)"] == 1
    assert any("MPVSS" in note for note in record.notes)


def test_flownetpytorch_and_mmtracking_flownets_compute_what_their_code_computes():
    source = read_source(GOLDEN / "flownets_flownetpytorch.pth.tar")
    method = build_method("dff:golden", 8)
    load_weights(method, GOLDEN / "flownets_flownetpytorch.pth.tar")
    flownet = method.feature_flow.flownet.double().eval()
    reference = torch.load(GOLDEN / "flownets_flownetpytorch_reference.pt", weights_only=True)
    with torch.no_grad():
        raw = flownet.predict_flow(flownet.decoder(flownet.encoder(reference["input"].double())))
    assert _close(raw, reference["flow2"]) < TOLERANCE
    assert flownet.flow_scale == source.info["div_flow"] / 4  # pixels of its own grid

    method = build_method("dff:golden", 8)
    load_weights(method, GOLDEN / "flownet_simple_mmtracking.pth")
    flownet = method.feature_flow.flownet.double().eval()
    reference = torch.load(GOLDEN / "flownet_simple_mmtracking_reference.pt", weights_only=True)
    with torch.no_grad():
        flow = flownet(reference["current"].double(), reference["key"].double())
    # mmtracking returns the flow upsampled to the image, in image pixels: 8 times our grid's.
    full = F.interpolate(flow, scale_factor=8, mode="bilinear", align_corners=False) * 8
    assert _close(full, reference["flow"]) < TOLERANCE


def test_mpvss_motion_encoder_takes_the_encoder_of_a_flownets():
    method = build_method("mpvss:golden", 8)
    record = load_weights(method, GOLDEN / "flownet_simple_mmtracking.pth")
    assert record.module == "flow_module.encoder" and isinstance(method.flow_module.encoder, FlowNetSEncoder)
    assert any("decoder" in reason for reason in record.dropped)
    assert record.mapped == len(FlowNetS(**FLOWNET).encoder.state_dict())


def _mit_features(method, reference):
    with torch.no_grad():
        return method.double().segmentor.extract(reference["input"].double())


def test_imagenet_mit_of_nvlabs_and_mmseg_initialise_the_backbone(tmp_path):
    """NVlabs's mit_b*.pth holds the backbone's keys and a classification head; mmseg's ImageNet MiT the
    backbone's keys in its layout: both made here from the golden checkpoints' backbones."""
    checkpoint = torch.load(GOLDEN / "segformer_nvlabs.pth", weights_only=True)["state_dict"]
    imagenet = {k[len("backbone."):]: v for k, v in checkpoint.items() if k.startswith("backbone.")}
    torch.save({**imagenet, "head.weight": torch.zeros(10, 64), "head.bias": torch.zeros(10)}, tmp_path / "mit.pth")
    mmseg = torch.load(GOLDEN / "segformer_mmseg.pth", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k[len("backbone."):]: v for k, v in mmseg.items() if k.startswith("backbone.")}},
               tmp_path / "mit_mmseg.pth")
    for file, reference_file, expected_format in (("mit.pth", "mit_nvlabs_reference.pt", "nvlabs-mit"),
                                                  ("mit_mmseg.pth", "mit_mmseg_reference.pt", "mmseg-mit")):
        method = _perframe("golden-segformer")
        record = load_weights(method, tmp_path / file, purpose="train")
        assert (record.component, record.format) == ("backbone", expected_format)
        reference = torch.load(GOLDEN / reference_file, weights_only=True)
        for ours, theirs in zip(_mit_features(method, reference), reference["features"], strict=True):
            assert _close(ours, theirs) < TOLERANCE
        assert not any(k.startswith("segmentor.model.decode_head") for k in record.loaded_keys)


def test_imagenet_swin_and_resnet_initialise_the_mask2former_backbone(tmp_path):
    """Official Swin (.pth, and Mask2Former's .pkl of it), torchvision ResNet and detectron2's R-50.pkl."""
    official = torch.load(GOLDEN / "swin_official.pth", weights_only=True)
    with open(tmp_path / "swin.pkl", "wb") as handle:  # what convert-pretrained-swin-model-to-d2.py writes
        pickle.dump({"model": official["model"], "__author__": "third_party", "matching_heuristics": True}, handle)
    cases = [(GOLDEN / "swin_official.pth", "golden-mask2former-swin", "swin_official_reference.pt", "official-swin"),
             (tmp_path / "swin.pkl", "golden-mask2former-swin", "swin_official_reference.pt", "official-swin"),
             (GOLDEN / "resnet_torchvision.pth", "golden-mask2former-r50-stem8", "resnet_reference.pt",
              "torchvision-resnet"),
             (GOLDEN / "resnet_d2.pkl", "golden-mask2former-r50-stem8", "resnet_reference.pt", "detectron2-resnet")]
    for path, preset, reference_file, expected_format in cases:
        method = _perframe(preset)
        record = load_weights(method, path, component="backbone", purpose="train")
        assert record.format == expected_format
        reference = torch.load(GOLDEN / reference_file, weights_only=True)
        encoder = method.double().segmentor.model.model.pixel_level_module.encoder
        with torch.no_grad():
            maps = encoder(reference["input"].double()).feature_maps
        for ours, theirs in zip(maps, reference["features"].values(), strict=True):
            assert _close(ours, theirs) < TOLERANCE, path.name
        if expected_format == "official-swin":  # the per-stage output norms are new, as in Mask2Former
            assert sum("hidden_states_norms" in k for k in record.missing) == 8


def test_a_converted_golden_checkpoint_round_trips_through_a_vssbench_checkpoint(tmp_path):
    method = _perframe("golden-segformer")
    load_weights(method, GOLDEN / "segformer_nvlabs.pth")
    save_checkpoint(method, tmp_path / "converted.pt")
    again = _perframe("golden-segformer")
    load_weights(again, tmp_path / "converted.pt")
    assert again.segmentor.layer_norm_eps == method.segmentor.layer_norm_eps  # the convention travels
    reference = torch.load(GOLDEN / "segformer_nvlabs_reference.pt", weights_only=True)
    with torch.no_grad():
        assert _close(again.double().step(reference["input"].double(), True), reference["logits"]) < TOLERANCE


def test_weights_of_another_head_or_family_are_refused_with_the_preset_that_takes_them():
    with pytest.raises(CheckpointError, match="segformer-\\*-mmseg preset"):
        load_weights(_perframe("golden-segformer"), GOLDEN / "segformer_mmseg.pth")
    with pytest.raises(CheckpointError, match="fills a PSPNet"):
        load_weights(_perframe("golden-segformer"), GOLDEN / "pspnet_r18_tiny.pth")
    with pytest.raises(CheckpointError, match="tensors the target lacks|shape mismatches"):
        load_weights(_perframe("golden-pspnet-r50"), GOLDEN / "pspnet_r18_tiny.pth")


def test_an_mmseg_resnet_v1c_initialises_the_pspnet_backbone_as_the_full_checkpoint_does(tmp_path):
    """mmseg's ImageNet ResNetV1c (``resnet18_v1c``) has the keys of its PSPNet's backbone, without the prefix."""
    checkpoint = torch.load(GOLDEN / "pspnet_r18_tiny.pth", weights_only=True)["state_dict"]
    torch.save({"state_dict": {k[len("backbone."):]: v for k, v in checkpoint.items() if k.startswith("backbone.")}},
               tmp_path / "resnet_v1c.pth")
    full, backbone = _perframe("golden-pspnet-r18"), _perframe("golden-pspnet-r18")
    load_weights(full, GOLDEN / "pspnet_r18_tiny.pth")
    record = load_weights(backbone, tmp_path / "resnet_v1c.pth", purpose="train")
    assert (record.component, record.format) == ("backbone", "resnet-v1c")
    ours = backbone.segmentor.backbone.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in full.segmentor.backbone.state_dict().items())
    assert not any(".head." in k for k in record.loaded_keys)


def test_flownets_go_to_the_flow_network_of_every_method_that_has_one(monkeypatch):
    from vssbench.methods.accel import Accel
    from vssbench.methods.tfc import TFC

    monkeypatch.setitem(Accel.presets, "golden", dict(reference="golden", update="golden-pspnet-r18"))
    monkeypatch.setitem(TFC.presets, "golden", dict(segmentor="golden-segformer", heads=2, points=4, flownet=FLOWNET))
    for spec, variant, module in (("accel:golden", None, "reference.feature_flow.flownet"),
                                  ("tfc:golden", "flow-warp", "flownet"), ("mpvss:golden", "optical-flow", "flownet")):
        method = build_method(spec, 8, variant)
        record = load_weights(method, GOLDEN / "flownets_flownetpytorch.pth.tar", purpose="train")
        assert (record.component, record.module) == ("flow", module)
    with pytest.raises(CheckpointError, match="a flow network; tfc:golden \\(sparse-msda-0.8\\) has none"):
        load_weights(build_method("tfc:golden", 8), GOLDEN / "flownets_flownetpytorch.pth.tar")


@pytest.mark.parametrize("name,preset", [("segformer_nvlabs", "golden-segformer"),
                                         ("segformer_cffm", "golden-segformer"),
                                         ("segformer_mmseg", "golden-segformer-mmseg")])
def test_every_tensor_of_a_segformer_golden_moves_its_output(name, preset):
    """Perturbed one at a time, each floating tensor the golden file gives the model changes the logits, so
    a wrong mapping of any of them would fail the golden comparison; what the file holds beyond them is
    what the load drops with its reason (NVlabs's unused ``conv_seg``, CFFM's temporal head). The one
    exception is exact: a key bias adds the same q . b to every score of a query, which the softmax
    cancels, so no input can see it (the test checks that it does not). At the 32 x 48 input these files
    had once, spatial reduction left one key token in stages 1-3 and their query and key weights had no
    effect either."""
    method = _perframe(preset).double()
    record = load_weights(method, GOLDEN / f"{name}.pth")
    reference = torch.load(GOLDEN / f"{name}_reference.pt", weights_only=True)
    frame = reference["input"].double()
    generator = torch.Generator().manual_seed(0)
    unmoved = []
    with torch.no_grad():
        assert _close(method.step(frame, True), reference["logits"]) < TOLERANCE
        for key, tensor in method.state_dict().items():
            if not tensor.is_floating_point():  # batch norm's counters: never read at test time
                continue
            original = tensor.clone()
            tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype))
            if _close(method.step(frame, True), reference["logits"]) < 10 * TOLERANCE:
                unmoved.append(key)
            tensor.copy_(original)
    key_biases = [key for key in method.state_dict() if key.endswith("attention.k_proj.bias")]
    assert len(key_biases) == 5 and unmoved == key_biases, unmoved
    # a source tensor the load neither maps nor drops with a reason is refused (tests/test_weights.py)
    expected = {"segformer_nvlabs": ["conv_seg"], "segformer_cffm": ["conv_seg", "temporal head"],
                "segformer_mmseg": []}[name]
    assert all(any(word in reason for reason in record.dropped) for word in expected) and \
        len(record.dropped) == len(expected)
