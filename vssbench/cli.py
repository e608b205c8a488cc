"""The ``bench`` command: run, train, recipes, convert, profile, report, show, check, data, list.

Exit codes (:func:`main`): 0 success; 1 some result rows or checks failed; 2 bad input (arguments,
dataset, checkpoint, an unwritable output, an unreadable result file), with a message naming the
argument or file and what was expected; 130 on Ctrl-C, saying what was kept.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING


import vssbench
from vssbench.datasets import DATASETS, DatasetError
from vssbench.datasets.synthetic import SyntheticSpec, default_cache_dir, generate
from vssbench.files import atomic_path, check_writable
from vssbench.limits import LimitError, check_class_count

if TYPE_CHECKING:
    from vssbench.benchmark.tc import TCSettings
    from vssbench.datasets.base import VideoDataset

log = logging.getLogger("vssbench")
EXIT_ROWS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 1, 2, 130
ITERATIONS_EXPECTED = "a positive number of iterations"
ROUNDS_EXPECTED = "a number of rounds >= 0"


class UsageError(ValueError):
    """A command-line argument with an invalid value."""


# --------------------------------------------------------------------------- argument helpers


def _int_list(text: str, argument: str, low: int = 1, high: int | None = None,
              expected: str = "positive integers, e.g. 1,2,5,10") -> list[int]:
    """Comma-separated integers in ``low``..``high``; the error names the argument and ``expected``."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v < low or (high is not None and v > high) for v in values):
        raise UsageError(f"{argument} {text!r}: expected comma-separated {expected}")
    return values


def _memory_list(text: str) -> list[int]:
    """``--memory``: memory lengths M in 0..7 (STT's sweep axis)."""
    from vssbench.methods.stt import MAX_MEMORY

    return _int_list(text, "--memory", 0, MAX_MEMORY, f"memory lengths in 0..{MAX_MEMORY}, e.g. 0,1,7")


def _resize(text: str) -> str | int:
    """--resize: ``keep-ratio``, ``exact`` or ``short:N`` (returned as the int N)."""
    if text in ("keep-ratio", "exact"):
        return text
    if text.startswith("short:") and text[6:].isdigit() and int(text[6:]) > 0:
        return int(text[6:])
    raise argparse.ArgumentTypeError(f"{text!r}: expected keep-ratio, exact or short:N with N a positive integer")


def _size(text: str, argument: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"{argument} {text!r}: expected HEIGHTxWIDTH, e.g. 128x224") from None
    if height < 16 or width < 16:
        raise UsageError(f"{argument} {text!r}: both sides must be at least 16 pixels")
    return height, width


def _checkpoints(values: list[str] | None, specs: list[str]) -> dict[str, Path]:
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


def _specs(text: str) -> list[str]:
    """Comma-separated METHOD[:PRESET] specs, each checked against the registry."""
    from vssbench.methods.base import parse_spec

    specs = [s.strip() for s in text.split(",") if s.strip()]
    for spec in specs:
        parse_spec(spec)
    return specs


def _check_at_least(value: int | None, argument: str, low: int = 1, expected: str = "a positive integer") -> None:
    """An optional integer argument must be at least ``low``; the error names the argument and ``expected``."""
    if value is not None and value < low:
        raise UsageError(f"{argument} {value}: expected {expected}")


def _check_device(device: str) -> None:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available on this machine")


def _require_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise UsageError(f"result file {path} does not exist")


def _exit_code(rows: list[dict]) -> int:
    """Name each failed row on stderr; exit 1 if any failed."""
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        print(f"FAILED {row['label']}: {row['error']}", file=sys.stderr)
    return EXIT_ROWS_FAILED if failed else 0


def _add_dataset_arguments(parser: argparse.ArgumentParser, split_default: str) -> None:
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


def _checkpoint_cache(args: argparse.Namespace, dataset: VideoDataset) -> Path:
    return Path(args.cache_dir or default_cache_dir()) / "checkpoints" / Path(dataset.root).name


# --------------------------------------------------------------------------- subcommands


def command_run(args: argparse.Namespace) -> int:
    import torch

    from vssbench.benchmark import distributed
    from vssbench.benchmark.preparation import WeightSources, missing_weights, weights_preparer
    from vssbench.benchmark.runner import EvaluationOptions, SweepSettings, run_sweep, sweep_plan
    from vssbench.benchmark.tables import run_table
    from vssbench.methods.base import build_method

    specs = _specs(args.methods)
    intervals = _int_list(args.intervals, "--intervals")
    memory_frames = _memory_list(args.memory)
    checkpoints = _checkpoints(args.checkpoint, specs)
    for value, argument in ((args.train_iters, "--train-iters"), (args.stage_iters, "--stage-iters")):
        _check_at_least(value, argument, expected=ITERATIONS_EXPECTED)
    _check_at_least(args.speed_rounds, "--speed-rounds", low=0, expected=ROUNDS_EXPECTED)
    _check_device(args.device)
    check_writable(args.output, "--output")
    check_writable(args.save_predictions, "--save-predictions", directory=True)
    _check_at_least(args.cycles, "--cycles")
    if args.cycles > 1 and args.save_predictions:
        raise UsageError(f"--cycles {args.cycles} with --save-predictions: each cycle's predictions of a video would "
                         "overwrite the last; expected one of them")
    if args.figure is not None and args.figure.suffix != ".png":
        raise UsageError(f"--figure {args.figure}: expected a path ending in .png (a PDF is written beside it)")
    check_writable(args.figure, "--figure")
    if args.dataset == "synthetic":  # where the generated data and the auto-trained weights go
        check_writable(args.cache_dir or default_cache_dir(), "--cache-dir" if args.cache_dir else "$VSSBENCH_CACHE",
                       directory=True)
    variants = args.variants.split(",") if args.variants else None
    tc_settings = _tc_settings(args)
    plan = sweep_plan(specs, variants)
    distributed.init_from_environment(args.device)
    dataset = load_dataset(args, args.split)
    if args.shipped_weights:
        from vssbench.benchmark.shipped import shipped_dataset

        conflicts = [flag for flag, given in (("--random-weights", args.random_weights),
                                              ("--train-iters", args.train_iters is not None),
                                              ("--stage-iters", args.stage_iters is not None)) if given]
        if dataset.name != shipped_dataset() or conflicts:
            raise UsageError(f"--shipped-weights: the shipped weights were trained on {shipped_dataset()} with its "
                             f"synthetic recipes; expected that dataset (got {dataset.name})"
                             + (f" and none of {', '.join(conflicts)}" if conflicts else ""))
    sources = WeightSources(checkpoints, args.random_weights, args.shipped_weights, train_iters=args.train_iters,
                            stage_iters=args.stage_iters, device=args.device)
    missing = missing_weights(specs, sources) if args.dataset != "synthetic" else []
    if missing:
        raise UsageError(f"no weights for {', '.join(missing)} on {args.dataset}: pass --checkpoint SPEC=PATH for "
                         "each (a vssbench checkpoint, or weights in a format of docs/weights.md), or "
                         "--random-weights for a cost or speed study (its rows say weights: random)")
    # The auto-training split is whole: --max-videos limits what is scored, never what the cached weights saw.
    if args.dataset == "synthetic" and not args.random_weights and not args.shipped_weights:
        sources.train_set = load_dataset(args, "train", limit_videos=False)
        sources.cache = _checkpoint_cache(args, dataset)
    seeds = (_int_list(args.seeds, "--seeds", low=0, expected="integers >= 0, e.g. 0,1,2") if args.seeds
             else [args.seed])
    if sources.train_set is not None or args.dry_run:
        _announce_plan(args, specs, variants, seeds, intervals, memory_frames, dataset, sources)
        if args.dry_run:  # the plan printed, nothing trained or scored
            return 0
    for spec, variant in plan:  # every checkpoint is checked before the first row is computed or written
        if spec in checkpoints or "*" in checkpoints or args.shipped_weights:
            torch.manual_seed(seeds[0])
            weights_preparer(sources, seeds[0])(build_method(spec, dataset.num_classes, variant))
    rows = []
    for seed in seeds:  # each seed trains (on synthetic) and scores every row; the rows record it
        settings = SweepSettings(
            specs=specs, intervals=intervals, memory_frames=memory_frames, variants=variants, output=args.output,
            # One folder per seed when there are several: each seed's rows name their own predictions.
            predictions_dir=(args.save_predictions / f"seed{seed}" if args.save_predictions and len(seeds) > 1
                             else args.save_predictions),
            seed=seed, overwrite=args.overwrite,
            evaluation=EvaluationOptions(device=args.device, miou_mode=args.miou_mode or dataset.official_miou_mode,
                                         vc_protocol=args.vc_protocol, num_workers=args.num_workers,
                                         speed_rounds=args.speed_rounds, tc=tc_settings, cycles=args.cycles))
        rows += run_sweep(settings, dataset, weights_preparer(sources, seed))
    if not distributed.is_main_process():
        return 0
    print(run_table(rows))
    print(f"\n{len(rows)} rows in {args.output}")
    finished = {row["label"] for row in rows if row["status"] == "ok"}
    if args.figure and finished:
        from vssbench.benchmark.report import accuracy_cost_figure

        print(f"figure, mIoU against GFLOPs: {accuracy_cost_figure([args.output], args.figure, finished)[0]}")
    return _exit_code(rows)


def _tc_settings(args: argparse.Namespace) -> TCSettings | None:
    """``--metrics tc``: RAFT from ``--tc-flow``, or a random one (seeded, marked) with ``--random-weights``."""
    from vssbench.benchmark.tc import TCSettings
    from vssbench.methods.raft import RAFTWeightsError

    extra = [m for m in (args.metrics or "").split(",") if m]
    unknown = [m for m in extra if m != "tc"]
    if unknown:
        raise UsageError(f"--metrics {args.metrics}: unknown {', '.join(unknown)}; expected tc (mIoU, WIoU and mVC "
                         "are always computed)")
    if "tc" not in extra:
        if args.tc_flow is not None:
            raise UsageError("--tc-flow: only with --metrics tc")
        return None
    _check_at_least(args.tc_iters, "--tc-iters", expected=ITERATIONS_EXPECTED)
    videos = None if args.tc_videos == "all" else _int_list(args.tc_videos, "--tc-videos",
                                                            expected="one positive integer or all")
    if videos is not None and len(videos) != 1:
        raise UsageError(f"--tc-videos {args.tc_videos!r}: expected one positive integer or all")
    try:
        return TCSettings.build(args.tc_flow, args.random_weights, args.seed, args.tc_iters,
                                videos if videos is None else videos[0])
    except RAFTWeightsError as error:
        raise UsageError(str(error)) from None


def _announce_plan(args: argparse.Namespace, specs: list[str], variants: list[str] | None, seeds: list[int],
                   intervals: list[int], memory_frames: list[int], dataset: VideoDataset, sources) -> None:
    """Print what the run will train before its first row (with --dry-run: the whole plan)."""
    from vssbench.benchmark import distributed
    from vssbench.benchmark.plan import machine_scale, plan_run, plan_text, training_lines
    from vssbench.benchmark.runner import SweepSettings

    train_set = sources.train_set
    plan = plan_run(specs, variants, seeds, SweepSettings(specs, intervals, memory_frames, variants),
                    dataset.num_classes, train_set, sources.cache, args.train_iters, args.stage_iters,
                    given=set(sources.checkpoints))
    where = f"{train_set.name}/{train_set.split}" if train_set else ""
    if distributed.is_main_process():
        scale = machine_scale() if plan.to_train else None
        text = plan_text(plan, scale, where) if args.dry_run else "\n".join(training_lines(plan, scale, where))
        if args.dry_run and args.shipped_weights:
            text += "\nweights: shipped with vssbench (vssbench/weights/synthetic/manifest.json)"
        if text:
            print(text, flush=True)


def command_train(args: argparse.Namespace) -> int:
    import torch

    from vssbench.benchmark import distributed
    from vssbench.benchmark.training import TrainingOptions, initial_weights, train, training_metadata
    from vssbench.methods.base import METHODS, build_method, parse_spec
    from vssbench.methods.weights import load_weights, save_checkpoint
    from vssbench.recipes import recipe_for

    for value, argument in ((args.iters, "--iters"), (args.batch, "--batch"), (args.micro_batch, "--micro-batch")):
        _check_at_least(value, argument,
                        expected=ITERATIONS_EXPECTED if argument == "--iters" else "a positive integer")
    for value, argument in ((args.save_every, "--save-every"), (args.validate_every, "--validate-every")):
        _check_at_least(value, argument, low=0, expected="a number of iterations >= 0")
    _check_at_least(args.log_every, "--log-every", expected="a positive number of iterations")
    _check_at_least(args.validate_interval, "--validate-interval", expected="a positive key-frame interval")
    _check_device(args.device)
    if args.amp not in (None, "off") and args.device != "cuda":
        raise UsageError(f"--amp {args.amp}: mixed precision runs on CUDA; add --device cuda")
    crop = _size(args.crop, "--crop") if args.crop else None
    inits = _components(args.init or [], "--init")
    method_name, preset = parse_spec(args.method)
    variant = args.variant or METHODS[method_name].variants[0]
    out = args.out = args.out or Path("checkpoints") / f"{method_name}-{preset}-{variant}.pt"
    check_writable(out, "--out")
    distributed.init_from_environment(args.device)
    dataset = load_dataset(args, args.split)
    torch.manual_seed(args.seed)
    method = build_method(args.method, dataset.num_classes, args.variant)
    kind = args.recipe or ("synthetic" if args.dataset == "synthetic" else "paper")
    recipe = recipe_for(method, dataset.name, kind).with_overrides(args.iters, args.batch, crop, args.micro_batch)
    records = [load_weights(method, path, component, purpose="train", reinit_classifier=args.reinit_classifier)
               for component, path in inits]
    for record in records:
        print(f"init: {record.summary()}")
    init = initial_weights(method, recipe, records, args.random_init)
    for component, source in init.items():
        if source == "random" and component in recipe.init:
            print(f"init: {component} starts from random weights (--random-init; the recipe starts it from "
                  f"{recipe.init[component]})")
    validation = None
    if args.validate_every:
        validation = load_dataset(args, "val")
        validation.videos = validation.videos[: args.validate_videos]
    log_path = out.with_name(out.name + ".log.jsonl")
    options = TrainingOptions(device=args.device, num_workers=args.num_workers, progress=not args.quiet,
                              amp=args.amp, state_path=out.with_name(out.name + ".state"), save_every=args.save_every,
                              log_path=log_path, log_every=args.log_every, validation=validation,
                              validate_every=args.validate_every, validate_interval=args.validate_interval)
    print(f"training {method.spec} ({method.variant}) with its {recipe.name} recipe ({recipe.dataset}): "
          f"{recipe.iterations} iterations of {recipe.batch_size} samples, {recipe.micro_batch} per pass; "
          f"log {log_path}")
    report = train(method, dataset, seed=args.seed, recipe=recipe, options=options)
    if not distributed.is_main_process():
        return 0
    save_checkpoint(method, out, training_metadata(report, dataset, args.seed, [path for _, path in inits], records,
                                                   recipe, init))
    print(f"trained {method.spec} ({method.variant}) for {report.iterations} iterations "
          f"(mixed precision: {report.amp or 'off'}): loss {report.first_loss:.4f} -> {report.final_loss:.4f}; "
          f"saved {out}")
    return 0


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


def _components(values: list[str], argument: str) -> list[tuple[str | None, Path]]:
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


def command_data(args: argparse.Namespace) -> int:
    height, width = _size(args.size, "--size")
    check_writable(args.out, "--out", directory=True)
    for name in ("train_videos", "val_videos", "frames", "seed"):
        _check_at_least(getattr(args, name), f"--{name.replace('_', '-')}", 0 if name == "seed" else 1)
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
    settings = ProfileSettings(
        specs=_specs(args.methods), resolution=_size(args.resolution, "--resolution"), num_classes=args.num_classes,
        intervals=_int_list(args.intervals, "--intervals"), memory_frames=_memory_list(args.memory),
        variants=args.variants.split(",") if args.variants else None, device=args.device, seed=args.seed,
        latency=not args.no_latency, repeats=args.repeats, warmup=args.warmup, speed_rounds=args.speed_rounds)
    check_writable(args.output, "--output")
    _check_at_least(args.speed_rounds, "--speed-rounds", low=0, expected=ROUNDS_EXPECTED)
    _check_device(args.device)
    rows = profile_sweep(settings, ResultFile(args.output))
    print(cost_table(rows, settings.intervals))
    return _exit_code(rows)


def command_report(args: argparse.Namespace) -> int:
    from vssbench.benchmark.qualitative import load_manifest
    from vssbench.benchmark.report import write_report

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    compare = None
    if args.compare:
        compare = tuple(label.strip() for label in args.compare.split(","))
        if len(compare) != 2:
            raise UsageError(f"--compare {args.compare!r}: expected two row labels separated by a comma")
    _require_files(args.files)
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


def command_show(args: argparse.Namespace) -> int:
    """Draw rows' saved predictions (from result files, or from a run of ``--methods`` made here)."""
    from vssbench.benchmark.qualitative import ShowError, ShowSettings, columns_from_rows, show
    from vssbench.benchmark.report import method_name
    from vssbench.benchmark.results import load_rows
    from vssbench.methods.base import registered_methods

    if bool(args.files) == bool(args.methods):
        raise UsageError("bench show: expected result files (FILE.jsonl, rows of `bench run --save-predictions`) "
                         "or --methods to run, not both and not neither")
    first, last = _frame_range(args.frames)
    still = _int_list(args.still_frames, "--still-frames", low=0, expected="frame indices >= 0, e.g. 10,11,12") \
        if args.still_frames else None
    _check_at_least(args.panel_width, "--panel-width", low=32, expected="a width of at least 32 pixels")
    if not args.fps > 0:
        raise UsageError(f"--fps {args.fps}: expected a positive number of frames per second")
    check_writable(args.out, "--out", directory=True)
    if args.methods:
        files = [args.out / "rows.jsonl"]
        files[0].unlink(missing_ok=True)  # show's own run, made afresh: only its rows are drawn
        shutil.rmtree(args.out / "predictions", ignore_errors=True)
        run_args = _show_run_arguments(args, files[0])
        print("bench " + " ".join(run_args))
        run_namespace = build_parser().parse_args(run_args)
        run_namespace.quiet = args.quiet
        if command_run(run_namespace) == EXIT_ROWS_FAILED:
            print("bench show: some rows failed; drawing those that finished", file=sys.stderr)
    else:
        files = args.files
        _require_files(files)
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


def command_check(args: argparse.Namespace) -> int:
    from vssbench.benchmark.regression import check, check_report, parse_tolerances
    from vssbench.benchmark.results import load_rows

    _require_files([args.file, args.baseline])
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


def command_list(args: argparse.Namespace) -> int:
    """The registry in 80 columns (defaults marked with *); every preset and variant with ``--verbose``."""
    from vssbench.benchmark.tables import method_table
    from vssbench.methods.base import registered_methods

    print(method_table(registered_methods(), args.verbose))
    print(f"datasets: {', '.join(DATASETS)}")
    return 0


# --------------------------------------------------------------------------- parser


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

    run = sub.add_parser("run", help="evaluate methods over key-frame intervals and write result rows",
                         description="Evaluate each method (and variant) at each key-frame interval; one JSON "
                                     "result row per configuration is added to --output as soon as it finishes.")
    run.add_argument("--methods", default="perframe,copy",
                     help="comma-separated METHOD[:PRESET] specs, e.g. perframe:segformer-tiny,copy "
                          "(default: perframe,copy; `bench list` shows all)")
    run.add_argument("--variants", help="comma-separated variants to run for the methods that have them, 'default' "
                                        "for each method's default, or 'all' (default: each method's default)")
    run.add_argument("--intervals", default="1,2,5,10", help="comma-separated key-frame intervals (default: 1,2,5,10)")
    run.add_argument("--memory", default="0,1,2,3,4,5,6,7",
                     help="memory lengths M swept by methods without key frames (STT) in place of intervals; "
                          "M = 0 is the image segmentor alone (default: 0,1,2,3,4,5,6,7)")
    _add_dataset_arguments(run, "val")
    run.add_argument("--videos", metavar="NAME,..", help="score only these videos of the split, in this order "
                                                         "(rows record the selection, as for --max-videos)")
    run.add_argument("--output", type=Path, default=Path("results/run.jsonl"),
                     help="JSONL result file; rows already finished there are skipped (default: results/run.jsonl)")
    run.add_argument("--overwrite", action="store_true", help="recompute rows already finished in --output")
    run.add_argument("--figure", type=Path, metavar="PNG",
                     help="after the table, draw this run's rows as mIoU against GFLOPs per frame into PNG (and a "
                          "PDF beside it), and name it in the last line printed")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (the rows, what must be trained first and for how long, what is cached) "
                          "and exit without training or scoring")
    run.add_argument("--save-predictions", type=Path, metavar="DIR",
                     help="write predictions as uint8 PNGs to DIR/<label>/<video>/<frame>.png")
    run.add_argument("--checkpoint", action="append", metavar="[SPEC=]PATH",
                     help="weights to load: PATH for every method, or SPEC=PATH for one (repeatable): a vssbench "
                          "checkpoint or any format of docs/weights.md, detected from its content; without it the "
                          "synthetic dataset trains and caches what is missing, other datasets need --random-weights")
    run.add_argument("--shipped-weights", action="store_true",
                     help="on the default synthetic set, evaluate with the weights shipped with vssbench (seed 0, "
                          "trained by `make shipped-weights`) instead of training on an empty cache; rows say so "
                          "(checkpoint.shipped)")
    run.add_argument("--random-weights", action="store_true",
                     help="allow methods without weights (or with parts not in their checkpoint) for cost and "
                          "speed studies; their rows say weights: random, reports mark them and bench check "
                          "does not compare their accuracy")
    run.add_argument("--train-iters", type=int, help="iterations for auto-training on synthetic, segmentors and "
                                                     "stages alike (default: each one's synthetic schedule)")
    run.add_argument("--stage-iters", type=int,
                     help="iterations of the video methods' own stages only, on top of the segmentors' "
                          "schedule, e.g. to compare variants at a longer schedule (default: --train-iters, "
                          "else each method's synthetic schedule)")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device to run on (default: cpu)")
    run.add_argument("--miou-mode", choices=("vspw", "mmseg", "all"),
                     help="vspw: mean over classes present in the ground truth (VSPW's evaluation); mmseg: "
                          "over classes with a non-empty union (mmsegmentation's and cityscapesscripts'); all: "
                          "over every class, an empty union counting 0 (DCFM's CamVid evaluation) (default: the "
                          "dataset's official evaluation: vspw for vspw and synthetic, mmseg for cityscapes, all "
                          "for camvid)")
    run.add_argument("--resize", type=_resize, default="keep-ratio", metavar="{keep-ratio,exact,short:N}",
                     help="keep-ratio: the dataset's own rule (vspw: fit into 480x853; cityscapes, camvid: full "
                          "size), scored at the label's resolution (the default); exact (vspw only): frames "
                          "(bilinear) and labels (nearest) resized to exactly 480x853 and scored there, as DCFM's "
                          "VSPW test does; short:N: frames resized so that their shorter side is N (DCFM's "
                          "Cityscapes test: short:512 for mitb1), scored at the label's resolution; the row's "
                          "resolution records it")
    run.add_argument("--clip-radius", type=int, metavar="R",
                     help="with --dataset cityscapes: clips of the labelled frame and R frames on either side "
                          "(DCFM's test: 1) instead of the 30-frame snippets; the row's videos record it")
    run.add_argument("--cycles", type=int, default=1,
                     help="run and score every video this many times in a row, a rotating key schedule moving on "
                          "each time (DCFM's test: 2, its `cicle`); the row's schedule records it (default: 1)")
    run.add_argument("--vc-protocol", choices=("vspw", "paper"), default="vspw",
                     help="vspw: VSPW's VC_perclip.py (published numbers); paper: the formula as printed "
                          "(default: vspw)")
    run.add_argument("--metrics", help="metrics beyond mIoU, WIoU and mVC: tc, VSPW's temporal consistency "
                                       "(TC_cal.py: RAFT flow between consecutive frames, docs/metrics.md)")
    run.add_argument("--tc-flow", type=Path, help="with --metrics tc: RAFT weights, princeton-vl's (raft-things.pth) "
                                                  "or torchvision's, large or small, detected from the file")
    run.add_argument("--tc-videos", default="100", help="with --metrics tc: score the first N videos of the split, "
                                                        "or all (default: 100, as VSPW's TC_cal.py)")
    run.add_argument("--tc-iters", type=int, default=20, help="with --metrics tc: RAFT iterations (default: 20, as "
                                                              "TC_cal.py)")
    run.add_argument("--num-workers", type=int, help="DataLoader workers for frame loading (default: 0 on cpu, "
                                                     "where workers would compete with the method for cores; 2 on cuda)")
    run.add_argument("--speed-rounds", type=int, default=5,
                     help="rounds of timing each video method's row in alternation with its per-frame segmentor, "
                          "for the speed ratio `bench check` compares (default: 5; 0 skips it)")
    seed = run.add_mutually_exclusive_group()
    seed.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    seed.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: the whole sweep once per seed, each "
                                      "training its own weights on synthetic; bench report shows their mean and "
                                      "spread")
    run.set_defaults(handler=command_run)

    train = sub.add_parser("train", help="train a method's trainable parameters with its own loss",
                           description="Train METHOD[:PRESET] on a dataset's training split and save a checkpoint.")
    train.add_argument("--method", required=True, help="METHOD[:PRESET], e.g. perframe:segformer-tiny")
    train.add_argument("--variant", help="method variant (default: the method's default)")
    _add_dataset_arguments(train, "train")
    train.add_argument("--recipe", choices=("paper", "synthetic"),
                       help="how to train (vssbench/recipes, `bench recipes`): the paper's, or vssbench's CPU-sized "
                            "schedule (default: synthetic on the synthetic set, paper elsewhere; on the synthetic set "
                            "the paper recipe is the VSPW one)")
    train.add_argument("--iters", type=int, help="iterations (default: the recipe's)")
    train.add_argument("--batch", type=int, help="global batch (default: the recipe's)")
    train.add_argument("--micro-batch", type=int,
                       help="samples per forward pass; the rest of the batch is split across processes and "
                            "accumulated (default: the recipe's batch over its paper's device count)")
    train.add_argument("--crop", metavar="HxW", help="training crop (default: the recipe's)")
    train.add_argument("--amp", choices=("bf16", "fp16", "off"),
                       help="mixed precision on CUDA (fp16 with a gradient scaler), or off (default: the recipe's: "
                            "fp16 on CUDA where its amp is true; the checkpoint records what ran)")
    train.add_argument("--save-every", type=int, default=0,
                       help="write the resumable state (OUT.state) every N iterations; re-running the same command "
                            "resumes from it (default: 0, never)")
    train.add_argument("--log-every", type=int, default=10,
                       help="iterations between records of the JSONL log OUT.log.jsonl (default: 10)")
    train.add_argument("--validate-every", type=int, default=0,
                       help="score the validation split every N iterations (default: 0, never)")
    train.add_argument("--validate-videos", type=int, default=2, help="videos scored by --validate-every (default: 2)")
    train.add_argument("--validate-interval", type=int, default=5,
                       help="key-frame interval --validate-every scores at (default: 5; methods without key frames: 1)")
    train.add_argument("--init", action="append", metavar="[COMPONENT=]PATH",
                       help="weights to start from, repeatable: a vssbench checkpoint (of the method, of a component "
                            "such as Accel's DFF, or of its per-frame segmentor) or any format of docs/weights.md; "
                            "COMPONENT (segmentor, backbone, flow, update) names the part, else the format decides")
    train.add_argument("--random-init", action="store_true",
                       help="start every component the recipe's init names and no --init covers from random "
                            "weights, recorded as init: random (without it such a run is refused)")
    train.add_argument("--reinit-classifier", action="store_true",
                       help="when an --init file has another class count, start the segmentor's classifier afresh "
                            "instead of failing")
    train.add_argument("--out", type=Path, help="checkpoint to write (default: checkpoints/METHOD-PRESET-VARIANT.pt)")
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: cpu)")
    train.add_argument("--num-workers", type=int, default=1,
                       help="DataLoader workers decoding and augmenting samples (default: 1; the progress lines "
                            "say how long each step waited for data)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.set_defaults(handler=command_train)

    recipes = sub.add_parser("recipes", help="print the training recipes and the source of every value",
                             description="Print the training recipes (vssbench/recipes/*.yaml): one per method and "
                                         "dataset, with the paper section or config file each value comes from.")
    recipes.add_argument("method", nargs="?", help="a method name (default: every method)")
    recipes.add_argument("--dataset", help="vspw, cityscapes or synthetic (default: all)")
    recipes.add_argument("--json", action="store_true", help="one JSON object per (method, dataset)")
    recipes.set_defaults(handler=command_recipes)

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
    profile.add_argument("--report-dir", type=Path, default=Path("reports"), help="where --fidelity writes")
    profile.add_argument("--published", type=Path,
                         help="with --fidelity: the published numbers to compare with (default: the packaged "
                              "vssbench/published.json)")
    profile.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    profile.set_defaults(handler=command_profile)

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
    _add_dataset_arguments(show_parser, "val")
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

    listing = sub.add_parser("list", help="list methods, presets and variants",
                             description="List every registered method with its default preset and variant; "
                                         "--verbose lists every preset and variant.")
    listing.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="every preset and variant, and what each method is")
    listing.set_defaults(handler=command_list)
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
