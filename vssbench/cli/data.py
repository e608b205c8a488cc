"""bench data synthetic: write the procedural synthetic dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from vssbench.cli.common import UsageError, check_at_least, parse_size
from vssbench.datasets.synthetic import SyntheticSpec, generate
from vssbench.files import check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="generate datasets", description="Generate a dataset.")
    data_sub = data.add_subparsers(dest="dataset_kind", required=True, metavar="KIND")
    synthetic = data_sub.add_parser("synthetic", help="write the procedural synthetic dataset in the VSPW layout",
                                    description="Write the procedural synthetic video dataset (VSPW layout). "
                                                "The same arguments give byte-identical masks.")
    defaults = SyntheticSpec()
    synthetic.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    synthetic.add_argument("--train-videos", type=int, default=defaults.train_videos,
                           help=f"training videos (default: {defaults.train_videos})")
    synthetic.add_argument("--val-videos", type=int, default=defaults.val_videos,
                           help=f"validation videos (default: {defaults.val_videos})")
    synthetic.add_argument("--frames", type=int, default=defaults.frames,
                           help=f"frames per video (default: {defaults.frames}; VC16 needs more than 16)")
    synthetic.add_argument("--size", default=f"{defaults.height}x{defaults.width}",
                           help=f"frame size HxW (default: {defaults.height}x{defaults.width})")
    synthetic.add_argument("--seed", type=int, default=defaults.seed, help=f"seed (default: {defaults.seed})")
    synthetic.add_argument("--noise-std", type=float, default=defaults.noise_std,
                           help="std of the per-frame Gaussian pixel noise, 0-255 scale "
                                f"(default: {defaults.noise_std})")
    synthetic.add_argument("--brightness-jitter", type=float, default=defaults.brightness_jitter,
                           help="per-frame gain drawn uniformly from 1 +- this "
                                f"(default: {defaults.brightness_jitter})")
    synthetic.set_defaults(handler=command_data)


def command_data(args: argparse.Namespace) -> int:
    height, width = parse_size(args.size, "--size")
    check_writable(args.out, "--out", directory=True)
    for name in ("train_videos", "val_videos", "frames", "seed"):
        check_at_least(getattr(args, name), f"--{name.replace('_', '-')}", 0 if name == "seed" else 1)
    if args.noise_std < 0 or not 0 <= args.brightness_jitter < 1:
        raise UsageError(f"--noise-std {args.noise_std} / --brightness-jitter {args.brightness_jitter}: expected "
                         "a noise std >= 0 and a jitter in [0, 1)")
    spec = SyntheticSpec(train_videos=args.train_videos, val_videos=args.val_videos, frames=args.frames,
                         height=height, width=width, seed=args.seed, noise_std=args.noise_std,
                         brightness_jitter=args.brightness_jitter)
    generate(args.out, spec)
    print(f"wrote {spec.train_videos} train and {spec.val_videos} val videos of {spec.frames} frames "
          f"({height}x{width}) to {args.out}")
    return 0
