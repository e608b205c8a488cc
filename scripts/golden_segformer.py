"""Make tests/golden's SegFormer files with the reference code itself: NVlabs/SegFormer, GuoleiSun/VSS-CFFM
and mmsegmentation (its ``mit2mmseg.py`` converter too).

    python scripts/golden_segformer.py PATH/TO/SegFormer PATH/TO/VSS-CFFM PATH/TO/mmsegmentation \\
        PATH/TO/SITE-PACKAGES tests/golden

Run in a scratch environment with torch, mmcv 1.7 (the build without compiled ops) and mmsegmentation 0.30
installed (SITE-PACKAGES is its site-packages), never in vssbench's. NVlabs's and CFFM's code are forks of
mmseg 0.11 under the same package name as the installed mmseg, so each of the three builds runs in a
process of its own (this script calls itself with ``--part``), importing only the files it needs through
package stubs (``golden_cffm.install_stubs``). From the mmsegmentation checkout only
``tools/model_converters/mit2mmseg.py`` is read. None of their code is changed or copied.

What it writes (inputs 64 x 96: at that size spatial reduction leaves 2 x 3 key tokens in stages 1-3, so
that every attention weight moves the output; at 32 x 48 one key token made stages 1-3's queries cancel):

* ``segformer_nvlabs.pth``: NVlabs's ``MixVisionTransformer`` (widths 16, 32, 48, 64; heads 1..4; depths
  2, 1, 1, 1; qkv bias; LayerNorm eps 1e-6 as its ``mit_b*``) and ``SegFormerHead`` (width 32), seeded
  random weights and batch-norm statistics; ``segformer_nvlabs_reference.pt``: ``encode_decode``'s logits
  (the head's output resized to the input, bilinear); ``mit_nvlabs_reference.pt``: the four feature maps.
* ``segformer_cffm.pth``: the same backbone class from CFFM's checkout (its own seeded weights) with
  ``CFFMHead_clips_resize1_8`` (width 32, one focal block); ``segformer_cffm_reference.pt``: the head on a
  clip of one frame, where CFFM runs its per-frame SegFormer branch, resized to the input.
* ``segformer_mmseg.pth``: mmsegmentation's ``MixVisionTransformer`` holding ``segformer_nvlabs.pth``'s
  backbone as ``mit2mmseg.py`` converts it, and its ``SegformerHead`` (width 32, seeded);
  ``segformer_mmseg_reference.pt`` and ``mit_mmseg_reference.pt`` as for NVlabs.

Weights are saved in float32 as each code's ``EncoderDecoder`` names them; the outputs are computed in
float64, to which the float32 weights and inputs cast exactly.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from golden_cffm import _package, _stub, install_stubs, randomise, tiny_mit  # noqa: E402

SIZE = (64, 96)
HEAD = dict(in_channels=[16, 32, 48, 64], in_index=[0, 1, 2, 3], channels=32, dropout_ratio=0.1, num_classes=8,
            norm_cfg=dict(type="BN", requires_grad=True), align_corners=False,
            loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))


def golden_input() -> torch.Tensor:
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(1))


def setup_fork(root: Path) -> None:
    """Import mmseg-0.x-style files under ``root`` one by one (a fork's checkout, or site-packages)."""
    install_stubs(root, fast_pytorch_kmeans=dict(KMeans=object))
    for package in ("mmseg/core", "mmseg/ops", "mmseg/models/losses", "mmseg/models/utils"):
        _package(package.replace("/", "."), root / package)
    from mmseg.ops.wrappers import resize

    sys.modules["mmseg.ops"].resize = resize
    sys.modules["mmseg.core"].build_pixel_sampler = lambda *args, **kwargs: None  # no sampler at test time
    from mmseg.models.losses.accuracy import accuracy
    from mmseg.models.losses.cross_entropy_loss import CrossEntropyLoss  # registers it for build_loss

    sys.modules["mmseg.models.losses"].accuracy = accuracy
    del CrossEntropyLoss
    _stub("mmseg.utils", get_root_logger=lambda *args, **kwargs: None)  # for pretrained loading, never called


def encode_decode(backbone: nn.Module, head: nn.Module, frame: torch.Tensor) -> torch.Tensor:
    """``EncoderDecoder.encode_decode``: the head's logits resized to the input (bilinear, unaligned)."""
    with torch.no_grad():
        return F.interpolate(head(backbone(frame)), size=frame.shape[2:], mode="bilinear", align_corners=False)


def save(out: Path, name: str, source: str, backbone: nn.Module, head: nn.Module, logits: torch.Tensor,
         frame: torch.Tensor, features: list[torch.Tensor] | None = None, mit_name: str | None = None) -> None:
    state = {**{f"backbone.{k}": v.float() for k, v in backbone.state_dict().items()},
             **{f"decode_head.{k}": v.float() if v.is_floating_point() else v for k, v in head.state_dict().items()}}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "meta": {"source": source}}, out / f"{name}.pth")
    torch.save({"input": frame.float(), "logits": logits}, out / f"{name}_reference.pt")
    if features is not None:
        torch.save({"input": frame.float(), "features": features}, out / f"{mit_name}.pt")
    print(name, len(state), "tensors; logits", tuple(logits.shape))


def nvlabs(root: Path, out: Path) -> None:
    setup_fork(root)
    from mmseg.models.backbones.mix_transformer import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegFormerHead

    backbone = tiny_mit(MixVisionTransformer)
    head = SegFormerHead(feature_strides=[4, 8, 16, 32], decoder_params=dict(embed_dim=32), **HEAD)
    randomise(backbone, head)
    backbone, head, frame = backbone.double().eval(), head.double().eval(), golden_input().double()
    with torch.no_grad():
        features = [f for f in backbone(frame)]
    save(out, "segformer_nvlabs", "NVlabs/SegFormer, scripts/golden_segformer.py", backbone, head,
         encode_decode(backbone, head, frame), frame, features, "mit_nvlabs_reference")


def cffm(root: Path, out: Path) -> None:
    setup_fork(root)
    from mmseg.models.backbones.mix_transformer import MixVisionTransformer
    from mmseg.models.decode_heads.cffm_head import CFFMHead_clips_resize1_8

    backbone = tiny_mit(MixVisionTransformer)
    head = CFFMHead_clips_resize1_8(feature_strides=[4, 8, 16, 32], decoder_params=dict(embed_dim=32, depths=1),
                                    num_clips=4, **HEAD)
    randomise(backbone, head)
    backbone, head, frame = backbone.double().eval(), head.double().eval(), golden_input().double()
    with torch.no_grad():  # a clip of one frame: CFFM's per-frame SegFormer branch
        logits = head(backbone(frame), batch_size=1, num_clips=1)
    logits = F.interpolate(logits, size=frame.shape[2:], mode="bilinear", align_corners=False)
    save(out, "segformer_cffm", "GuoleiSun/VSS-CFFM, scripts/golden_segformer.py", backbone, head, logits, frame)


def mmseg(checkout: Path, site_packages: Path, out: Path) -> None:
    setup_fork(site_packages)
    from mmseg.models.utils.embed import PatchEmbed
    from mmseg.models.utils.shape_convert import nchw_to_nlc, nlc_to_nchw

    utils = sys.modules["mmseg.models.utils"]  # a stub package: its __init__ (every block) is not run
    utils.PatchEmbed, utils.nchw_to_nlc, utils.nlc_to_nchw = PatchEmbed, nchw_to_nlc, nlc_to_nchw
    import mmcv
    from mmcv.utils import digit_version

    # what mmseg's __init__ defines and mit.py's attention reads to pick its batch-first path
    package = sys.modules["mmseg"]
    package.digit_version, package.mmcv_version = digit_version, digit_version(mmcv.__version__)
    from mmseg.models.backbones.mit import MixVisionTransformer
    from mmseg.models.decode_heads.segformer_head import SegformerHead

    spec = importlib.util.spec_from_file_location("mit2mmseg", checkout / "tools/model_converters/mit2mmseg.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    nvlabs_state = torch.load(out / "segformer_nvlabs.pth", weights_only=True)["state_dict"]
    converted = converter.convert_mit({k[len("backbone."):]: v for k, v in nvlabs_state.items()
                                       if k.startswith("backbone.")})
    backbone = MixVisionTransformer(in_channels=3, embed_dims=16, num_stages=4, num_layers=[2, 1, 1, 1],
                                    num_heads=[1, 2, 3, 4], patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1],
                                    out_indices=(0, 1, 2, 3), mlp_ratio=4, qkv_bias=True, drop_rate=0.0,
                                    attn_drop_rate=0.0, drop_path_rate=0.0)
    backbone.load_state_dict(converted, strict=True)
    torch.manual_seed(2)
    head = SegformerHead(interpolate_mode="bilinear", **HEAD)
    randomise(head)
    backbone, head, frame = backbone.double().eval(), head.double().eval(), golden_input().double()
    with torch.no_grad():
        features = [f for f in backbone(frame)]
    save(out, "segformer_mmseg", "mmsegmentation (mit2mmseg.py of segformer_nvlabs.pth), scripts/golden_segformer.py",
         backbone, head, encode_decode(backbone, head, frame), frame, features, "mit_mmseg_reference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("segformer", type=Path, help="a checkout of NVlabs/SegFormer")
    parser.add_argument("cffm", type=Path, help="a checkout of GuoleiSun/VSS-CFFM")
    parser.add_argument("mmsegmentation", type=Path, help="a checkout of open-mmlab/mmsegmentation (its converter)")
    parser.add_argument("site_packages", type=Path, help="the scratch environment's site-packages (mmseg 0.30)")
    parser.add_argument("out", type=Path, help="where to write the files (tests/golden)")
    parser.add_argument("--part", choices=("nvlabs", "cffm", "mmseg"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    if args.part == "nvlabs":
        sys.path.insert(0, str(args.segformer))
        nvlabs(args.segformer, args.out)
    elif args.part == "cffm":
        sys.path.insert(0, str(args.cffm))
        cffm(args.cffm, args.out)
    elif args.part == "mmseg":
        mmseg(args.mmsegmentation, args.site_packages, args.out)
    else:  # each build in a process of its own, NVlabs's first (mmseg's converts its backbone)
        for part in ("nvlabs", "cffm", "mmseg"):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--part", part], check=True)


if __name__ == "__main__":
    main()
