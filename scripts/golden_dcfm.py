"""Make tests/golden/dcfm_tiny/ (weights in DCFM's layout, references) with BUAAHugeGun/DCFM's own code.

    python scripts/golden_dcfm.py PATH/TO/DCFM PATH/TO/SITE-PACKAGES tests/golden

Run in a scratch environment with torch, mmcv 1.7 (the build without compiled ops), mmsegmentation
0.30.0 (``pip install --no-deps``: its model registry is not imported), mmengine and yacs; never in
vssbench's. As scripts/golden_cffm.py does, mmseg's packages are stubbed so that only the files DCFM
imports load (the rest would need mmcv's compiled ops), and timm's three layer helpers and
torchvision (which timm and mmcv.runner import, and which does not import beside the CPU torch) are
provided by :func:`golden_cffm.install_stubs`. None of DCFM's code is changed or copied.

What it builds: DCFM's ``DCFMEncoder`` (``backbone: segformerb0``, ``stage1: vit1``, head width
``high_level_ch`` 64) and ``DCFMDecoder`` (5 classes, ``bot_ch: -1``, ``stage1_ch`` 16) in two head
forms, ``head_nums`` 0 (the VSPW configs) and 1 (Cityscapes'), seeded random weights and batch-norm
statistics rounded to float16 values (the files store float16), computed in float64, evaluation
mode. DCFM's ``segformer`` class builds MiT-B0..B5 only and sizes its head for them; ``mit_b0`` is
replaced by DCFM's own ``MixVisionTransformer`` at B0's widths with depths (2, 1, 1, 1) and MLP ratio
1, to keep the files small (stage 1 keeps two blocks, so ``vit1`` is not the stage's output). The
references are what ``process/video_test.py`` computes, through its own
methods (``I_forward``, ``B_forward``, ``ffm``, ``seg_head``) on an object of its class built without
its ``__init__`` (which loads a dataset and runs a 1024x2048 frame on CUDA):

* ``key_logits``: ``I_forward`` of frame 0 (the key frame's prediction at 32 x 64);
* ``nonkey_logits``: frames 1-3 as B frames of key frame 0 with ``val_pos`` False (the previous key
  frame only): ``seg_head(norm(ffm(I_feat, B_forward(frame))))``;
* ``train``: ``DCFMDecoder``'s training forward on (U, L) = (frame 0, frame 1): its six outputs;
* ``protocol`` (``head0`` only: the loop does not depend on the head): ``infer()`` itself, the
  official test loop, on three videos of 6 frames in turn at ``K`` 3 with ``val_pos`` True (each
  video's first key frame one later: ``st`` 0, 1, 2) and on the first again with ``val_pos`` False:
  every frame's prediction. ``infer`` calls ``.cuda()`` and ``torch.cuda.synchronize``, made no-ops
  here, and sums into ``torch.zeros``, made float64 by the default dtype.

The ResNet configs' encoders (``pspnet18``, ``pspnet50``: semseg's PSPNet in ``nets/pspnet``) are built
the same way at an eighth of their widths (``nets.pspnet``'s ``nn.Conv2d`` and ``nn.BatchNorm2d`` take
every channel count but the image's 3 divided by 8, their depths as they are; the ImageNet file
``resnet*`` loads with ``strict=False`` is an empty state dict in a scratch folder), with
``DCFMDecoder`` at the configs' widths divided by 8 (``bot_ch`` 40 / 160, ``stage1_ch`` 4 / 16, head
form 1), on 32 x 48 frames: ``pspnet18/`` and ``pspnet50/`` each hold both files and the references
(without ``protocol``).

The weights are saved as DCFM's ``load_ckpt`` reads them, state dicts of DistributedDataParallel
modules (``module.`` prefix): ``encoder_epoch_1.pth`` once (both heads' encoders are the same draw)
and ``<head>/decoder_epoch_1.pth``; a test puts a pair in one ``logs/`` folder. Frames are 32 x 64.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from golden_cffm import _package, _stub, install_stubs, randomise  # noqa: E402

HEADS = {"head0": dict(head_nums=0), "head1": dict(head_nums=1, head_ch=64)}
# backbone -> DCFMDecoder's arguments at an eighth of the configs' widths (exp/cityscapes/dcfm/resnet18, resnet50).
PSPNETS = {"pspnet18": dict(high_level_ch=128, bot_ch=40, stage1_ch=4),
           "pspnet50": dict(high_level_ch=512, bot_ch=160, stage1_ch=16)}


class _EighthConv2d(nn.Conv2d):
    def __init__(self, in_channels: int, out_channels: int, *args: object, **kwargs: object) -> None:
        super().__init__(in_channels if in_channels == 3 else in_channels // 8, out_channels // 8, *args, **kwargs)


class _EighthBatchNorm2d(nn.BatchNorm2d):
    def __init__(self, channels: int, *args: object, **kwargs: object) -> None:
        super().__init__(channels // 8, *args, **kwargs)


class _Eighth:
    """``torch.nn`` for ``nets.pspnet``: convolutions and batch norms at an eighth of their channels."""

    Conv2d, BatchNorm2d = _EighthConv2d, _EighthBatchNorm2d

    def __getattr__(self, name: str) -> object:
        return getattr(nn, name)


def setup(dcfm: Path, site_packages: Path) -> type:
    """Import DCFM's encoder, decoder and test process file by file; returns the test process class."""
    install_stubs(site_packages)
    for package in ("mmseg/core", "mmseg/ops", "mmseg/models/losses", "mmseg/models/utils"):
        _package(package.replace("/", "."), site_packages / package)
    from mmseg.ops.wrappers import resize

    sys.modules["mmseg.ops"].resize = resize
    sys.modules["mmseg.core"].build_pixel_sampler = lambda *args, **kwargs: None  # sampler=None in DCFM's head
    from mmseg.models.losses.accuracy import accuracy
    from mmseg.models.losses.cross_entropy_loss import CrossEntropyLoss  # registers it for build_loss

    sys.modules["mmseg.models.losses"].accuracy = accuracy
    del CrossEntropyLoss
    _stub("mmengine")
    _stub("mmengine.runner", load_checkpoint=lambda *args, **kwargs: None)  # never called: no pretrained path
    for package in ("nets", "nets/dcfm", "nets/segformer", "nets/hrnet", "nets/pspnet", "datasets", "tools",
                    "metric", "process"):
        _package(package.replace("/", "."), dcfm / package)
    # Imported by encoder.py and video_test.py, never called on the MiT test path:
    _stub("nets.hrnet.seg_hrnet")
    _stub("nets.hrnet.config", config=None, update_config=None)
    sys.modules["nets.hrnet"].seg_hrnet = sys.modules["nets.hrnet.seg_hrnet"]
    import nets.pspnet.main as pspnet_main
    import nets.pspnet.resnet as pspnet_resnet

    pspnet_main.nn = pspnet_resnet.nn = _Eighth()
    sys.modules["nets.pspnet"].PSPNet = pspnet_main.PSPNet
    for name in ("cityscapes", "vspw", "camvid"):
        setattr(sys.modules["datasets"], name, _stub(f"datasets.{name}"))
    _stub("tools.utils", load_ckpt=None, get_parameter_number=None)
    sys.modules["tools"].utils = sys.modules["tools.utils"]
    _stub("tools.to_log", to_log=print)
    sys.modules["metric"].get_metric = None
    from nets.segformer.main import segformer

    sys.modules["nets.segformer"].segformer = segformer
    import nets.segformer.main as main_module
    from nets.segformer.mix_transformer import MixVisionTransformer

    def tiny_mit() -> nn.Module:  # mit_b0's widths (segformer('b0') sizes its head for them), fewer and slimmer blocks
        return MixVisionTransformer(patch_size=4, embed_dims=[32, 64, 160, 256], num_heads=[1, 2, 5, 8],
                                    mlp_ratios=[1, 1, 1, 1], qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                                    depths=[2, 1, 1, 1], sr_ratios=[8, 4, 2, 1], drop_rate=0.0, drop_path_rate=0.0)

    main_module.mit_b0 = tiny_mit
    torch.manual_seed(0)
    torch.save(tiny_mit().state_dict(), MIT_FILE)  # segformer() loads a pretrained file: any such weights do
    sys.modules["nets.segformer"].segformer = lambda mode, path, embed_dim: segformer(mode, str(MIT_FILE), embed_dim)
    from process.video_test import video_test_model_process

    return video_test_model_process


MIT_FILE = Path("/tmp/golden_dcfm_mit_b0.pth")


def build(head: dict, backbone: str = "segformerb0") -> tuple[nn.Module, nn.Module]:
    from nets.dcfm.decoder import DCFMDecoder
    from nets.dcfm.encoder import DCFMEncoder

    torch.manual_seed(0)
    if backbone in PSPNETS:
        encoder = DCFMEncoder(backbone=backbone, high_level_ch=PSPNETS[backbone]["high_level_ch"])
        decoder = DCFMDecoder(num_classes=5, head_drop=0.1, head_nums=1, **PSPNETS[backbone])
    else:
        encoder = DCFMEncoder(backbone="segformerb0", stage1="vit1", high_level_ch=64)
        decoder = DCFMDecoder(num_classes=5, bot_ch=-1, head_drop=0.1, high_level_ch=64, stage1_ch=16, **head)
    for module in (encoder, decoder):
        for sub in list(module.modules()):
            for name, child in list(sub.named_children()):
                if isinstance(child, nn.SyncBatchNorm):  # BatchNorm2d's computation in evaluation, on a CPU
                    setattr(sub, name, nn.BatchNorm2d(child.num_features, child.eps, child.momentum))
    for seed, module in enumerate((encoder, decoder), start=1):  # the same encoder draw under either head
        torch.manual_seed(seed)
        randomise(module)
    for module in (encoder, decoder):  # values a float16 holds exactly: the files store float16, half the bytes
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.is_floating_point():
                tensor.data = tensor.data.half().float()
    return encoder.double().eval(), decoder.double().eval()


def references(encoder: nn.Module, decoder: nn.Module, process: type, with_protocol: bool,
               backbone: str = "segformerb0") -> dict:
    generator = torch.Generator().manual_seed(1)
    size = (32, 48) if backbone in PSPNETS else (32, 64)
    frames = torch.randn(4, 1, 3, *size, generator=generator).double()
    tester = object.__new__(process)
    tester.encoder, tester.decoder, tester.backbone_name, tester.stage1 = encoder, decoder, backbone, "vit1"
    with torch.no_grad():
        key_logits, key_feature = tester.I_forward(frames[0], size)
        nonkey = [tester.seg_head(tester.norm(tester.ffm(key_feature, tester.B_forward(frame))), size)
                  for frame in frames[1:]]
        features, stage1 = encoder((frames[1], frames[0]))  # (x_L, x_U): DCFMEncoder concatenates [x_U, x_L]
        train = decoder((features, stage1, torch.zeros(1, *size)))
    return {"frames": frames.float(), "key_logits": key_logits, "nonkey_logits": torch.cat(nonkey),
            "train": list(train), **({"protocol": protocol(encoder, decoder, process)} if with_protocol else {})}


def protocol(encoder: nn.Module, decoder: nn.Module, process: type) -> dict:
    """The official ``infer`` on three 6-frame videos at K = 3 (``val_pos`` True), and on the first with
    ``val_pos`` False; a video's frames as ``datasets/*.get_video`` gives them: a list of [frame]."""
    generator = torch.Generator().manual_seed(2)
    videos = torch.randn(3, 6, 1, 3, 32, 64, generator=generator).double()
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.set_default_dtype(torch.float64)  # the zeros infer() sums predictions into

    def tester(val_pos: bool) -> object:
        t = object.__new__(process)
        t.encoder, t.decoder, t.backbone_name, t.stage1 = encoder, decoder, "segformerb0", "vit1"
        t.mode, t.num_classes, t.GOP_size, t.val_pos, t.val_I, t.val_B = "video", 5, 3, val_pos, True, True
        t.aks, t.st, t.data_pool = False, 0, {}
        return t

    def run(t: object, video: torch.Tensor) -> torch.Tensor:
        t.get_data = lambda: ([[frame] for frame in video], (32, 64), None)
        preds, _ = t.infer()
        return torch.cat(preds)

    try:
        bidirectional = tester(True)
        official = torch.stack([run(bidirectional, video) for video in videos])
        default = run(tester(False), videos[0])
    finally:
        torch.set_default_dtype(torch.float32)
    return {"videos": videos.squeeze(2).float(), "k": 3, "official": official, "default": default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dcfm", type=Path, help="a checkout of BUAAHugeGun/DCFM")
    parser.add_argument("site_packages", type=Path, help="the scratch environment's site-packages (mmseg 0.30)")
    parser.add_argument("out", type=Path, help="where to write dcfm_tiny/ (the weights and references)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.dcfm))
    process = setup(args.dcfm, args.site_packages)
    folder, encoders = args.out / "dcfm_tiny", []
    for name, head in HEADS.items():
        encoder, decoder = build(head)
        encoders.append(encoder.state_dict())
        (folder / name).mkdir(parents=True, exist_ok=True)
        torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in decoder.state_dict().items()},
                   folder / name / "decoder_epoch_1.pth")
        reference = references(encoder, decoder, process, with_protocol=name == "head0")
        torch.save(reference, folder / name / "reference.pt")
        print(name, {k: tuple(v.shape) if hasattr(v, "shape") else len(v) for k, v in reference.items()})
    assert all(torch.equal(encoders[0][k], other[k]) for other in encoders[1:] for k in other)  # one encoder, stored once
    save(encoders[0], folder / "encoder_epoch_1.pth")
    scratch = Path(tempfile.mkdtemp())  # semseg's resnet*() read ./pretrain/<file> with strict=False
    (scratch / "pretrain").mkdir()
    for name in ("resnet18-f37072fd.pth", "resnet50_v2.pth"):
        torch.save({}, scratch / "pretrain" / name)
    os.chdir(scratch)
    for backbone in PSPNETS:
        encoder, decoder = build({}, backbone)
        (folder / backbone).mkdir(parents=True, exist_ok=True)
        save(encoder.state_dict(), folder / backbone / "encoder_epoch_1.pth")
        save(decoder.state_dict(), folder / backbone / "decoder_epoch_1.pth")
        reference = references(encoder, decoder, process, with_protocol=False, backbone=backbone)
        torch.save(reference, folder / backbone / "reference.pt")
        print(backbone, {k: tuple(v.shape) if hasattr(v, "shape") else len(v) for k, v in reference.items()})


def save(state: dict[str, torch.Tensor], path: Path) -> None:
    """As a DistributedDataParallel module's state dict, floating-point tensors in float16."""
    torch.save({f"module.{k}": v.half() if v.is_floating_point() else v for k, v in state.items()}, path)


if __name__ == "__main__":
    main()
