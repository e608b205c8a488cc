"""bench recipes: print the training recipes and the source of every value."""

from __future__ import annotations

import argparse

from vssbench.cli.common import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    recipes = sub.add_parser("recipes", help="print the training recipes and the source of every value",
                             description="Print the training recipes (vssbench/recipes/*.yaml): one per method and "
                                         "dataset, with the paper section or config file each value comes from.")
    recipes.add_argument("method", nargs="?", help="a method name (default: every method)")
    recipes.add_argument("--dataset", help="vspw, cityscapes or synthetic (default: all)")
    recipes.add_argument("--json", action="store_true", help="one JSON object per (method, dataset)")
    recipes.set_defaults(handler=command_recipes)


def command_recipes(args: argparse.Namespace) -> int:
    import json

    from vssbench.benchmark.tables import recipe_table
    from vssbench.recipes import PAPER_DATASETS, all_recipes

    if args.dataset and args.dataset not in (*PAPER_DATASETS, "synthetic"):
        raise UsageError(f"--dataset {args.dataset!r}: expected one of {', '.join((*PAPER_DATASETS, 'synthetic'))}")
    recipes = [r for r in all_recipes() if (args.method in (None, r.method) or (args.method == "copy"
               and r.method == "perframe")) and args.dataset in (None, r.dataset)]
    if args.method and not recipes:
        raise UsageError(f"no recipes for {args.method!r}" + (f" on {args.dataset}" if args.dataset else ""))
    print(json.dumps([r.as_json() for r in recipes], indent=1) if args.json
          else recipe_table(recipes, sources=bool(args.method)))
    return 0
