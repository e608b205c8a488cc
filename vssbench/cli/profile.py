"""bench profile: parameters, FLOPs, latency and speed ratios on random frames; --fidelity."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vssbench.cli.common import (
    ROUNDS_EXPECTED,
    UsageError,
    check_at_least,
    check_device,
    exit_code,
    int_list,
    memory_list,
    method_specs,
    parse_size,
)
from vssbench.files import atomic_path, check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    profile = sub.add_parser("profile", help="measure parameters, FLOPs per path, latency and FPS (no data needed)",
                             description="Profile methods on random frames: parameters per component, GFLOPs of "
                                         "the key and non-key paths (fvcore, 1 multiply-add = 1 FLOP) and their "
                                         "average over a 15-frame clip per interval, latency (median, IQR) and FPS.")
    profile.add_argument("--methods", default="perframe", help="comma-separated METHOD[:PRESET] specs")
    profile.add_argument("--variants", "--variant", dest="variants",
                         help="comma-separated variants, 'default' or 'all', as for bench run (default: each "
                              "method's default)")
    profile.add_argument("--resolution", default="480x853", help="input HxW (default: 480x853, VSPW)")
    profile.add_argument("--num-classes", type=int, default=124, help="classes (default: 124, VSPW; 19 Cityscapes)")
    profile.add_argument("--intervals", default="1,5,10", help="key-frame intervals (default: 1,5,10)")
    profile.add_argument("--memory", default="0,7", help="memory lengths M profiled for STT (default: 0,7)")
    profile.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: cpu)")
    profile.add_argument("--repeats", type=int, default=5, help="timed key-interval cycles (default: 5)")
    profile.add_argument("--warmup", type=int, default=1, help="untimed warm-up cycles (default: 1)")
    profile.add_argument("--no-latency", action="store_true", help="count parameters and FLOPs only")
    profile.add_argument("--speed-rounds", type=int, default=0,
                         help="rounds of timing each video method in alternation with a random-weight copy of its "
                              "per-frame segmentor, per interval: the speed ratio `bench run` rows carry "
                              "(default: 0, off; 5 as `bench run`)")
    profile.add_argument("--output", type=Path, default=Path("results/profile.jsonl"),
                         help="JSONL file for the cost rows (default: results/profile.jsonl)")
    profile.add_argument("--fidelity", action="store_true",
                         help="compare every preset that has a published number with it (params, GFLOPs) and "
                              "write the table to --report-dir/fidelity.md")
    profile.add_argument("--speed-report", action="store_true",
                         help="time every paper preset against its per-frame segmentor at the paper's resolution "
                              "and interval (--speed-rounds rounds, 3 if 0) beside the paper's FPS ratio and the "
                              "FLOPs limit, and write --report-dir/speed.md (--methods: only these specs)")
    profile.add_argument("--report-dir", type=Path, default=Path("reports"),
                         help="where --fidelity and --speed-report write (default: reports)")
    profile.add_argument("--published", type=Path,
                         help="with --fidelity: the published numbers to compare with (default: the packaged "
                              "vssbench/published.json)")
    profile.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    profile.set_defaults(handler=command_profile)


def _read_published(path: Path) -> dict:
    """``--published``: a JSON file with the packaged file's keys, read once; else bad input naming it."""
    import json

    try:
        numbers = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"--published {path}: cannot read it as JSON ({error})") from None
    missing = [key for key in ("tolerance", "tables", "entries") if key not in numbers]
    if missing:
        raise UsageError(f"--published {path}: missing {', '.join(missing)}; expected the layout of "
                         "vssbench/published.json")
    return numbers


def command_profile(args: argparse.Namespace) -> int:
    from vssbench.benchmark.fidelity import fidelity_report
    from vssbench.benchmark.profile_sweep import ProfileSettings, profile_sweep
    from vssbench.benchmark.results import ResultFile
    from vssbench.benchmark.tables import cost_table

    if args.fidelity:
        check_writable(args.report_dir, "--report-dir", directory=True)
        numbers = _read_published(args.published) if args.published is not None else None
        report, unexplained = fidelity_report(numbers, progress=not args.quiet)
        print(report)
        args.report_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.report_dir / "fidelity.md") as path:
            path.write_text(report)
        print(f"\nwrote {args.report_dir / 'fidelity.md'}")
        if unexplained:
            print(f"bench profile --fidelity: {unexplained} quantities are outside tolerance without a cause "
                  "and its recomputed number", file=sys.stderr)
        return 1 if unexplained else 0
    if args.speed_report:
        return _speed_report(args)
    settings = ProfileSettings(
        specs=method_specs(args.methods), resolution=parse_size(args.resolution, "--resolution"),
        num_classes=args.num_classes,
        intervals=int_list(args.intervals, "--intervals"), memory_frames=memory_list(args.memory),
        variants=args.variants.split(",") if args.variants else None, device=args.device, seed=args.seed,
        latency=not args.no_latency, repeats=args.repeats, warmup=args.warmup, speed_rounds=args.speed_rounds)
    check_writable(args.output, "--output")
    check_at_least(args.speed_rounds, "--speed-rounds", low=0, expected=ROUNDS_EXPECTED)
    check_device(args.device)
    rows = profile_sweep(settings, ResultFile(args.output))
    print(cost_table(rows, settings.intervals))
    return exit_code(rows)


def _speed_report(args: argparse.Namespace) -> int:
    import time

    from vssbench.benchmark.speed_report import (
        PAPER_PRESETS,
        run_speed_report,
        speed_report,
    )

    check_writable(args.report_dir, "--report-dir", directory=True)
    check_at_least(args.speed_rounds, "--speed-rounds", low=0, expected=ROUNDS_EXPECTED)
    check_device(args.device)
    specs = method_specs(args.methods) if args.methods != "perframe" else None  # the default: every preset
    presets = [p for p in PAPER_PRESETS if specs is None or p.spec in specs]
    if specs is not None and len(presets) != len(specs):
        known = ", ".join(p.spec for p in PAPER_PRESETS)
        raise UsageError(f"--methods {args.methods}: --speed-report times the paper presets; expected some of {known}")
    rounds = args.speed_rounds or 3
    started = time.perf_counter()
    command = "bench profile --speed-report" + (f" --methods {args.methods}" if specs else "") + \
        (f" --speed-rounds {args.speed_rounds}" if args.speed_rounds else "")
    args.report_dir.mkdir(parents=True, exist_ok=True)

    def write(rows: list[dict]) -> None:  # after every preset: an interrupted run keeps what it measured
        with atomic_path(args.report_dir / "speed.md") as path:
            path.write_text(speed_report(rows, args.device, rounds, command, time.perf_counter() - started))

    rows = run_speed_report(presets, rounds, args.device, on_rows=write,
                            on_preset=lambda p: print(f"speed report: {p.spec} at k={p.interval}, "
                                                      f"{p.resolution[0]}x{p.resolution[1]}", flush=True))
    print((args.report_dir / "speed.md").read_text())
    print(f"wrote {args.report_dir / 'speed.md'}")
    return 0 if all(row["status"] == "ok" for row in rows) else 1

