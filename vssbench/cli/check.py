"""bench check: fail when results regress against a baseline."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vssbench.cli.common import EXIT_ROWS_FAILED, UsageError, require_files


def add_parser(sub: argparse._SubParsersAction) -> None:
    check_parser = sub.add_parser("check", help="fail when results regress against a baseline",
                                  description="Match rows to the baseline by configuration and exit 1, naming "
                                              "each regression, when accuracy drops by more than its tolerance, "
                                              "parameters or FLOPs change, the speed ratio against the per-frame "
                                              "run drops by more than its band, or a baseline row is missing.")
    check_parser.add_argument("file", type=Path, metavar="FILE.jsonl", help="result file to check")
    check_parser.add_argument("--baseline", type=Path, required=True, help="baseline result file")
    check_parser.add_argument("--require-all", action="store_true",
                              help="also fail on baseline rows the run lacks (the CI gate)")
    check_parser.add_argument("--tolerance",
                              help="overrides, e.g. miou=1,mvc8=1,speed=0.5: accuracy in points (default 0.5 "
                                   "each), speed as the allowed fractional drop of the ratio (default 0.3)")
    check_parser.set_defaults(handler=command_check)


def command_check(args: argparse.Namespace) -> int:
    from vssbench.benchmark.regression import check, check_report, parse_tolerances
    from vssbench.benchmark.results import load_rows

    require_files([args.file, args.baseline])
    try:
        tolerances = parse_tolerances(args.tolerance)
    except ValueError as error:
        raise UsageError(str(error)) from None
    rows, baseline = load_rows(args.file), load_rows(args.baseline)
    for path, side in ((args.file, rows), (args.baseline, baseline)):
        if not side:
            raise UsageError(f"{path} holds no rows; expected the result rows of a bench run")
    try:
        result = check(rows, baseline, tolerances, require_all=args.require_all)
    except ValueError as error:
        raise UsageError(f"bench check {args.file} --baseline {args.baseline}: {error}") from None
    out, regressions = check_report(result, args.file, args.baseline, args.require_all)
    for line in out[:-1]:
        print(line)
    for line in regressions:
        print(line, file=sys.stderr)
    print(out[-1])
    return 0 if result.passed else EXIT_ROWS_FAILED
