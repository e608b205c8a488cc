"""What the subcommands share: the usage error and exit codes, argument parsing helpers, the dataset
arguments and opening the dataset they name."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from vssbench.datasets import DATASETS
from vssbench.datasets.synthetic import default_cache_dir

if TYPE_CHECKING:
    from vssbench.datasets.base import VideoDataset

EXIT_ROWS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
ITERATIONS_EXPECTED = "a positive number of iterations"
ROUNDS_EXPECTED = "a number of rounds >= 0"


class UsageError(ValueError):
    """A command-line argument with an invalid value."""


def int_list(text: str, argument: str, low: int = 1, high: int | None = None,
              expected: str = "positive integers, e.g. 1,2,5,10") -> list[int]:
    """Comma-separated integers in ``low``..``high``; the error names the argument and ``expected``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < low or (high is not None and v > high) for v in values):
        raise UsageError(f"{argument} {text!r}: expected comma-separated {expected}")
    return values


def memory_list(text: str) -> list[int]:
    """``--memory``: memory lengths M in 0..7 (STT's sweep axis)."""
    from vssbench.methods.stt import MAX_MEMORY

    return int_list(text, "--memory", 0, MAX_MEMORY, f"memory lengths in 0..{MAX_MEMORY}, e.g. 0,1,7")


def parse_resize(text: str) -> str | int:
    """--resize: ``keep-ratio``, ``exact`` or ``short:N`` (returned as the int N)."""
    if text in ("keep-ratio", "exact"):
        return text
    if text.startswith("short:") and text[6:].isdigit() and int(text[6:]) > 0:
        return int(text[6:])
    raise argparse.ArgumentTypeError(f"{text!r}: expected keep-ratio, exact or short:N with N a positive integer")


def parse_size(text: str, argument: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{argument} {text!r}: expected HEIGHTxWIDTH, e.g. 128x224") from None
    if height < 16 or width < 16:
        raise UsageError(f"{argument} {text!r}: both sides must be at least 16 pixels")
    return height, width


def checkpoint_paths(values: list[str] | None, specs: list[str]) -> dict[str, Path]:
    """``--checkpoint PATH`` (every method, key "*") or ``--checkpoint SPEC=PATH`` (one method, key METHOD:PRESET)."""
    from vssbench.methods.base import parse_spec

    canonical = {":".join(parse_spec(spec)) for spec in specs}
    mapping = {}
    for value in values or []:
        spec, sep, path = value.rpartition("=")
        key = ":".join(parse_spec(spec)) if sep else "*"
        if sep and key not in canonical:
            raise UsageError(f"--checkpoint {value!r} names {spec!r}, which is not among --methods {','.join(specs)}")
        mapping[key] = Path(path)
    return mapping


def method_specs(text: str) -> list[str]:
    """Comma-separated METHOD[:PRESET] specs, each checked against the registry."""
    from vssbench.methods.base import parse_spec

    specs = [s.strip() for s in text.split(",") if s.strip()]
    for spec in specs:
        parse_spec(spec)
    return specs


def check_at_least(value: int | None, argument: str, low: int = 1, expected: str = "a positive integer") -> None:
    """An optional integer argument must be at least ``low``; the error names the argument and ``expected``."""
    if value is not None and value < low:
        raise UsageError(f"{argument} {value}: expected {expected}")


def check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine")


def require_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise UsageError(f"result file {path} does not exist")


def exit_code(rows: list[dict]) -> int:
    """Name each failed row on stderr; exit 1 if any failed."""
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        print(f"FAILED {row['label']}: {row['error']}", file=sys.stderr)
    return EXIT_ROWS_FAILED if failed else 0


def add_dataset_arguments(parser: argparse.ArgumentParser, split_default: str) -> None:
    parser.add_argument("--dataset", choices=DATASETS, default="synthetic",
                        help="dataset to use (default: synthetic, generated on first use into the cache)")
    parser.add_argument("--data-root", type=Path,
                        help="dataset root folder (required for vspw, cityscapes and camvid; for synthetic, a folder "
                             "written by `bench data synthetic` instead of the cached default)")
    parser.add_argument("--split", default=split_default, help=f"split to use (default: {split_default})")
    parser.add_argument("--max-videos", type=int, help="use only the first N videos of the split")
    parser.add_argument("--cache-dir", type=Path,
                        help="cache for generated data and auto-trained checkpoints "
                             "(default: $VSSBENCH_CACHE or ~/.cache/vssbench)")


def load_dataset(args: argparse.Namespace, split: str, limit_videos: bool = True) -> VideoDataset:
    """The dataset named by --dataset/--data-root/--split (and run's --resize, --clip-radius); --videos and
    --max-videos choose its videos where ``limit_videos`` (the split scored or trained on by name, never
    the training split ``bench run`` trains on by itself)."""
    from vssbench.datasets.select import open_dataset, select_videos

    dataset = open_dataset(args.dataset, split, args.data_root, args.cache_dir, getattr(args, "resize", "keep-ratio"),
                           getattr(args, "clip_radius", None))
    if limit_videos:
        select_videos(dataset, getattr(args, "videos", None), args.max_videos)
    return dataset


def checkpoint_cache(args: argparse.Namespace, dataset: VideoDataset) -> Path:
    return Path(args.cache_dir or default_cache_dir()) / "checkpoints" / Path(dataset.root).name


def component_paths(values: list[str], argument: str) -> list[tuple[str | None, Path]]:
    """``[COMPONENT=]PATH`` values -> (component or None, path); the component is checked when loading."""
    parsed = []
    for value in values:
        component, sep, path = value.partition("=")
        if not sep:
            component, path = None, value
        elif not component or not path:
            raise UsageError(f"{argument} {value!r}: expected PATH or COMPONENT=PATH, e.g. backbone=mit_b0.pth")
        parsed.append((component, Path(path)))
    return parsed
