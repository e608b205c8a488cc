"""bench show: draw rows' saved predictions side by side."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from vssbench.cli.common import (
    EXIT_ROWS_FAILED,
    UsageError,
    add_dataset_arguments,
    check_at_least,
    int_list,
    load_dataset,
    require_files,
)
from vssbench.files import check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    show_parser = sub.add_parser(
        "show", help="draw predictions side by side: animations, error and flicker overlays, a still figure",
        description="For each chosen video, write animations of the frame, the ground truth and every row's "
                    "prediction (compare), the same with wrong pixels marked (errors) and with pixels whose "
                    "prediction changed while the ground truth did not (flicker), a paper-style still figure "
                    "(PNG, PDF) and show.json. Rows come from result files of `bench run --save-predictions`, "
                    "or from a run of --methods made first (docs/show.md).")
    show_parser.add_argument("files", type=Path, nargs="*", metavar="FILE.jsonl",
                             help="result files whose rows saved predictions")
    show_parser.add_argument("--out", type=Path, required=True, help="folder to write into")
    show_parser.add_argument("--labels", metavar="LABEL,..", help="the rows to draw, in this order (default: every "
                                                                  "finished row that saved predictions)")
    show_parser.add_argument("--methods", help="run these METHOD[:PRESET] specs first (on the chosen videos, "
                                               "predictions saved under --out) and draw their rows")
    show_parser.add_argument("--intervals", default="5", help="with --methods: key-frame intervals (default: 5)")
    show_parser.add_argument("--memory", default="7", help="with --methods: STT's memory lengths (default: 7)")
    show_parser.add_argument("--variants", help="with --methods: as for bench run")
    show_parser.add_argument("--checkpoint", action="append", metavar="[SPEC=]PATH",
                             help="with --methods: as for bench run")
    show_parser.add_argument("--shipped-weights", action="store_true", help="with --methods: as for bench run")
    show_parser.add_argument("--random-weights", action="store_true", help="with --methods: as for bench run")
    show_parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="with --methods: device")
    add_dataset_arguments(show_parser, "val")
    show_parser.set_defaults(dataset=None, split=None)  # from the rows, unless named
    show_parser.add_argument("--videos", metavar="NAME,..", help="videos to draw (default: the split's first)")
    show_parser.add_argument("--frames", default="0:", metavar="START:END",
                             help="frame indices shown, END exclusive (default: 0:, the whole video); the methods "
                                  "still ran from each video's first frame")
    show_parser.add_argument("--still-frames", metavar="T,..",
                             help="frames of the still figure (default: the first key frame of the largest "
                                  "interval and the k-1 after it, at most 6)")
    show_parser.add_argument("--format", choices=("gif", "webp"), default="gif",
                             help="animation format (default: gif, which browsers and slides play)")
    show_parser.add_argument("--fps", type=float, default=4.0, help="animation frames per second (default: 4)")
    show_parser.add_argument("--panel-width", type=int, default=256,
                             help="panels wider than this are scaled down to it (default: 256)")
    show_parser.set_defaults(handler=command_show)


def command_show(args: argparse.Namespace) -> int:
    """Draw rows' saved predictions (from result files, or from a run of ``--methods`` made here)."""
    from vssbench.benchmark.qualitative import (
        ShowError,
        ShowSettings,
        columns_from_rows,
        show,
    )
    from vssbench.benchmark.report import method_name
    from vssbench.benchmark.results import load_rows
    from vssbench.methods.base import registered_methods

    if bool(args.files) == bool(args.methods):
        raise UsageError("bench show: expected result files (FILE.jsonl, rows of `bench run --save-predictions`) "
                         "or --methods to run, not both and not neither")
    first, last = _frame_range(args.frames)
    still = int_list(args.still_frames, "--still-frames", low=0, expected="frame indices >= 0, e.g. 10,11,12") \
        if args.still_frames else None
    check_at_least(args.panel_width, "--panel-width", low=32, expected="a width of at least 32 pixels")
    if not args.fps > 0:
        raise UsageError(f"--fps {args.fps}: expected a positive number of frames per second")
    check_writable(args.out, "--out", directory=True)
    if args.methods:
        files = [args.out / "rows.jsonl"]
        files[0].unlink(missing_ok=True)  # show's own run, made afresh: only its rows are drawn
        shutil.rmtree(args.out / "predictions", ignore_errors=True)
        run_args = _show_run_arguments(args, files[0])
        print("bench " + " ".join(run_args))
        from vssbench.cli import build_parser
        from vssbench.cli.run import command_run

        run_namespace = build_parser().parse_args(run_args)
        run_namespace.quiet = args.quiet
        if command_run(run_namespace) == EXIT_ROWS_FAILED:
            print("bench show: some rows failed; drawing those that finished", file=sys.stderr)
    else:
        files = args.files
        require_files(files)
    rows = [row for path in files for row in load_rows(path)]
    if args.dataset is None:  # the rows' dataset and split, unless named
        datasets = sorted({row.get("dataset") for row in rows if row.get("predictions_dir")})
        if len(datasets) > 1:
            raise UsageError(f"rows of several datasets ({', '.join(map(str, datasets))}); expected one, "
                             "or --labels choosing rows of one")
        name = datasets[0] if datasets else "synthetic"
        if name != "synthetic" and args.data_root is None:  # another synthetic set, VSPW, Cityscapes
            raise UsageError(f"the rows were scored on {name}; expected --data-root naming its folder")
        args.dataset = "synthetic" if str(name).startswith("synthetic") else name
        if args.split is None:
            args.split = next((row["split"] for row in rows if row.get("predictions_dir")), "val")
    dataset = load_dataset(args, args.split or "val", limit_videos=False)
    labels = [label.strip() for label in args.labels.split(",") if label.strip()] if args.labels else None
    classes = registered_methods()
    names = {row["label"]: f"{method_name(row)}:{row['preset']}" for row in rows}  # the random mark comes later
    try:
        columns = columns_from_rows(rows, labels, {m: cls.uses_key_frames for m, cls in classes.items()}, names)
        other = sorted({c.row["dataset"] for c in columns} - {dataset.name})
        if other:
            raise ShowError(f"the rows were scored on {', '.join(other)}, the dataset loaded is {dataset.name}; "
                            "expected --dataset/--data-root naming the rows' dataset")
        settings = ShowSettings(out=args.out, videos=args.videos.split(",") if args.videos else None,
                                first_frame=first, last_frame=last, still_frames=still,
                                animation_format=args.format, fps=args.fps, panel_width=args.panel_width)
        manifest = show(columns, dataset, settings, progress=print)
    except ShowError as error:
        raise UsageError(str(error)) from None
    count = sum(len(v["animations"]) + len(v["still"]["files"]) for v in manifest["videos"].values())
    print(f"\nwrote {count} files and {args.out / 'show.json'} for {len(columns)} rows, "
          f"{len(manifest['videos'])} videos, into {args.out}")
    return 0


def _frame_range(text: str) -> tuple[int, int | None]:
    """``--frames START:END`` (END exclusive, either may be left out) as (start, end or None)."""
    start, sep, end = text.partition(":")
    try:
        first = int(start) if start.strip() else 0
        last = int(end) if end.strip() else None
    except ValueError:
        first, last = -1, None
    if not sep or first < 0 or (last is not None and last <= first):
        raise UsageError(f"--frames {text!r}: expected START:END frame indices, END exclusive, e.g. 0:20 or 10:")
    return first, last


def _show_run_arguments(args: argparse.Namespace, output: Path) -> list[str]:
    """The ``bench run`` that ``bench show --methods`` makes: the chosen videos, predictions saved under
    ``--out``, no speed rounds (a figure needs predictions, not timings)."""
    run = ["run", "--methods", args.methods, "--intervals", args.intervals, "--memory", args.memory,
           "--dataset", args.dataset or "synthetic", "--split", args.split or "val", "--output", str(output),
           "--save-predictions", str(args.out / "predictions"), "--speed-rounds", "0", "--device", args.device]
    for flag, value in (("--variants", args.variants), ("--data-root", args.data_root),
                        ("--cache-dir", args.cache_dir), ("--videos", args.videos),
                        ("--max-videos", args.max_videos if args.max_videos is not None else None)):
        if value is not None:
            run += [flag, str(value)]
    if not args.videos and args.max_videos is None:
        run += ["--max-videos", "1"]  # the first video, which show draws by default
    for flag, given in (("--shipped-weights", args.shipped_weights), ("--random-weights", args.random_weights)):
        if given:
            run.append(flag)
    for checkpoint in args.checkpoint or []:
        run += ["--checkpoint", checkpoint]
    return run
