"""bench convert: weights of any supported format -> a vssbench checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from vssbench.cli.common import UsageError
from vssbench.files import check_writable
from vssbench.limits import check_class_count


def add_parser(sub: argparse._SubParsersAction) -> None:
    convert = sub.add_parser("convert", help="convert weights of any supported format into a vssbench checkpoint",
                             description="Read weights in any format of docs/weights.md (detected from the content), "
                                         "check that they fit METHOD[:PRESET] and write a vssbench checkpoint that "
                                         "later runs load directly; the conversion report is printed and recorded.")
    convert.add_argument("source", type=Path, metavar="SRC", help="weights file or Hugging Face model folder")
    convert.add_argument("--method", required=True,
                         help="METHOD[:PRESET] the weights are for, e.g. perframe:segformer-b0")
    convert.add_argument("--variant", help="method variant (default: the method's default)")
    convert.add_argument("--component", help="the part the weights fill when the format alone does not say")
    convert.add_argument("--num-classes", type=int,
                         help="class count (default: read from the weights, e.g. the classifier's outputs)")
    convert.add_argument("--out", type=Path, required=True, metavar="FILE.pt", help="vssbench checkpoint to write")
    convert.set_defaults(handler=command_convert)


def command_convert(args: argparse.Namespace) -> int:
    import torch

    from vssbench.methods.base import build_method
    from vssbench.methods.weights import (
        detect_format,
        infer_num_classes,
        load_weights,
        random_parameters,
        read_source,
        save_checkpoint,
    )

    check_writable(args.out, "--out")
    if args.num_classes is not None:
        check_class_count(args.num_classes, "--num-classes", UsageError)
    source = read_source(args.source)
    fmt = detect_format(source)
    num_classes = args.num_classes or infer_num_classes(source, fmt, args.method, args.variant)
    torch.manual_seed(0)
    method = build_method(args.method, num_classes, args.variant)
    record = load_weights(method, args.source, args.component, purpose="evaluate")
    random = random_parameters(method, [record])
    if random:
        parts = ", ".join(f"{part} ({count / 1e6:.2f}M parameters)" for part, count in random.items())
        raise UsageError(f"{args.source} gives {method.spec} its {record.component} only; {parts} would be saved "
                         f"at random: convert into the segmentor's own method (e.g. perframe:"
                         f"{method.segmentor_preset}) and train {method.spec} from it with --init")
    save_checkpoint(method, args.out, {"converted_from": [record.as_row()]})
    print(f"{record.summary()}\nwrote {method.spec} ({method.variant}, {num_classes} classes) to {args.out}")
    return 0
