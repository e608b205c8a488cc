"""The ``bench`` command: run, train, recipes, convert, profile, report, show, check, data, list.

One module per subcommand holds its arguments (``add_parser``) and its handler, which parses and checks
them and calls ``vssbench.benchmark``; what they share is in :mod:`vssbench.cli.common`.

Exit codes (:func:`main`): 0 success; 1 some result rows or checks failed; 2 bad input (arguments,
dataset, checkpoint, an unwritable output, an unreadable result file), with a message naming the
argument or file and what was expected; 130 on Ctrl-C, saying what was kept.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

import vssbench
from vssbench.cli import (
    check,
    convert,
    data,
    listing,
    profile,
    recipes,
    report,
    run,
    show,
    train,
)
from vssbench.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, UsageError
from vssbench.datasets import DatasetError
from vssbench.datasets.synthetic import default_cache_dir
from vssbench.limits import LimitError

SUBCOMMANDS = (run, train, recipes, convert, data, profile, report, show, check, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench", description="vssbench: compare efficient video semantic segmentation methods "
                                  "on accuracy (mIoU, WIoU), temporal consistency (mVC) and cost.")
    parser.add_argument("--version", action="version", version=f"vssbench {vssbench.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging; with list, every preset")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error or an interruption")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or progress lines (also accepted after the subcommand)")
    parser.add_argument("--plugin", action="append", metavar="MODULE", default=[],
                        help="import MODULE first, registering the methods it defines (repeatable); installed "
                             "packages register theirs through the vssbench.methods entry points")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for command in SUBCOMMANDS:
        command.add_parser(sub)
    _accept_quiet_after(sub)
    return parser


def _accept_quiet_after(subparsers: argparse._SubParsersAction) -> None:
    """``bench SUBCOMMAND --quiet`` means ``bench --quiet SUBCOMMAND``: every subcommand takes the option, with a
    suppressed default so that it never overwrites the global one."""
    for parser in subparsers.choices.values():
        parser.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                            help="no progress bars or progress lines")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_quiet_after(action)


def main(argv: list[str] | None = None) -> int:
    """The exit-code contract: 0 success, 1 some rows or checks failed, 2 bad input (arguments, data,
    checkpoints, unwritable outputs, unreadable result files), 130 on Ctrl-C with a line saying what
    was kept. None of these prints a traceback unless ``--debug``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose or args.debug else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    from vssbench.progress import set_quiet

    set_quiet(args.quiet)
    from vssbench.benchmark.results import ResultFileError, git_commit
    from vssbench.benchmark.runner import MethodError
    from vssbench.benchmark.training import TrainingError
    from vssbench.datasets.augment import AugmentationError
    from vssbench.methods.base import SpecError, load_plugin_module
    from vssbench.methods.weights import CheckpointError
    from vssbench.recipes import RecipeError

    bad_input = (UsageError, DatasetError, SpecError, CheckpointError, MethodError, RecipeError, TrainingError,
                 AugmentationError, ResultFileError, LimitError, OSError)
    git_commit()  # the rows name the code this process loaded
    try:
        for module in args.plugin:
            load_plugin_module(module)
        return args.handler(args)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print(f"bench {args.command}: interrupted; {_what_was_kept(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except bad_input as error:
        if args.debug:
            traceback.print_exc()
        print(f"bench {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _what_was_kept(args: argparse.Namespace) -> str:
    """After Ctrl-C: what is on disk and how to go on from it."""
    from vssbench.benchmark.results import load_rows

    if args.command in ("run", "profile") and getattr(args, "output", None):
        finished = [r for r in load_rows(args.output, skip_unreadable=True) if r.get("status") == "ok"]
        text = (f"{len(finished)} finished rows are in {args.output} (every row is written as soon as it is done); "
                "the same command computes only the rest")
        if args.command == "run":
            states = sorted(Path(args.cache_dir or default_cache_dir()).glob("checkpoints/*/*.state"),
                            key=lambda path: path.stat().st_mtime)
            if states:
                text += f", and resumes the interrupted training from {states[-1]}"
        return text
    if args.command == "train" and args.out is not None:  # command_train resolves the default --out
        state = args.out.with_name(args.out.name + ".state")
        if state.is_file():
            return f"the training state is in {state}; the same command resumes from it"
        return "no training state was saved (--save-every N saves one every N iterations, to resume from)"
    return "files already written are complete (each is written to a temporary file and renamed)"
