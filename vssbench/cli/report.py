"""bench report: tables and figures from result rows."""

from __future__ import annotations

import argparse
from pathlib import Path

from vssbench.cli.common import UsageError, require_files
from vssbench.files import check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="paper-style tables (Markdown, LaTeX, CSV) and figures from result rows",
                            description="Write the comparison, ablation, memory and per-frame cost tables and "
                                        "the figures (PNG and PDF) that the rows of the given files can fill.")
    report.add_argument("files", type=Path, nargs="+", metavar="FILE.jsonl", help="result files of `bench run`")
    report.add_argument("--out", type=Path, required=True, help="folder to write the tables and figures to")
    report.add_argument("--format", default="md,tex,csv", help="table formats (default: md,tex,csv)")
    report.add_argument("--compare", metavar="LABEL,LABEL",
                        help="two row labels for the per-class IoU figure (default: the per-frame row and the "
                             "MPVSS, else another method's, row at the largest interval)")
    report.add_argument("--html", action="store_true",
                        help="also write report.html: one self-contained page (sortable tables, figures, per-class "
                             "IoU, seeds' spread, provenance per row) that opens offline")
    report.add_argument("--show", type=Path, action="append", metavar="DIR",
                        help="with --html: inline the animations and still figures of this `bench show` folder "
                             "(repeatable)")
    report.set_defaults(handler=command_report)


def command_report(args: argparse.Namespace) -> int:
    from vssbench.benchmark.qualitative import load_manifest
    from vssbench.benchmark.report import write_report

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    compare = None
    if args.compare:
        compare = tuple(label.strip() for label in args.compare.split(","))
        if len(compare) != 2:
            raise UsageError(f"--compare {args.compare!r}: expected two row labels separated by a comma")
    require_files(args.files)
    check_writable(args.out, "--out", directory=True)
    if args.show and not args.html:
        raise UsageError("--show: expected --html too (the animations are inlined into the page)")
    try:
        shows = [(folder, load_manifest(folder)) for folder in args.show or []]
        written = write_report(args.files, args.out, formats, compare, html=args.html, shows=shows)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for path in written:
        print(path)
    print(f"\nwrote {len(written)} files to {args.out}")
    return 0
