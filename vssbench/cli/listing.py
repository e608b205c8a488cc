"""bench list: the registered methods, presets and variants."""

from __future__ import annotations

import argparse

from vssbench.datasets import DATASETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser("list", help="list methods, presets and variants",
                             description="List every registered method with its default preset and variant; "
                                         "--verbose lists every preset and variant.")
    listing.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="every preset and variant, and what each method is")
    listing.set_defaults(handler=command_list)


def command_list(args: argparse.Namespace) -> int:
    """The registry in 80 columns (defaults marked with *); every preset and variant with ``--verbose``."""
    from vssbench.benchmark.tables import method_table
    from vssbench.methods.base import registered_methods

    print(method_table(registered_methods(), args.verbose))
    print(f"datasets: {', '.join(DATASETS)}")
    return 0
