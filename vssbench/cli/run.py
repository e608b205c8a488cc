"""bench run: evaluate methods over key-frame intervals (or memory lengths) and write result rows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from vssbench.cli.common import (
    ITERATIONS_EXPECTED,
    ROUNDS_EXPECTED,
    UsageError,
    add_dataset_arguments,
    check_at_least,
    check_device,
    checkpoint_cache,
    checkpoint_paths,
    exit_code,
    int_list,
    load_dataset,
    memory_list,
    method_specs,
    parse_resize,
)
from vssbench.datasets.synthetic import default_cache_dir
from vssbench.files import check_writable

if TYPE_CHECKING:
    from vssbench.benchmark.tc import TCSettings
    from vssbench.datasets.base import VideoDataset


def add_parser(sub: argparse._SubParsersAction) -> None:
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
    add_dataset_arguments(run, "val")
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
    run.add_argument("--resize", type=parse_resize, default="keep-ratio", metavar="{keep-ratio,exact,short:N}",
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


def command_run(args: argparse.Namespace) -> int:
    import torch

    from vssbench.benchmark import distributed
    from vssbench.benchmark.preparation import (
        WeightSources,
        missing_weights,
        weights_preparer,
    )
    from vssbench.benchmark.runner import (
        EvaluationOptions,
        SweepSettings,
        run_sweep,
        sweep_plan,
    )
    from vssbench.benchmark.tables import run_table
    from vssbench.methods.base import build_method

    specs = method_specs(args.methods)
    intervals = int_list(args.intervals, "--intervals")
    memory_frames = memory_list(args.memory)
    checkpoints = checkpoint_paths(args.checkpoint, specs)
    for value, argument in ((args.train_iters, "--train-iters"), (args.stage_iters, "--stage-iters")):
        check_at_least(value, argument, expected=ITERATIONS_EXPECTED)
    check_at_least(args.speed_rounds, "--speed-rounds", low=0, expected=ROUNDS_EXPECTED)
    check_device(args.device)
    check_writable(args.output, "--output")
    check_writable(args.save_predictions, "--save-predictions", directory=True)
    check_at_least(args.cycles, "--cycles")
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
    # The auto-training split is whole: --max-videos limits what is scored, never what the cached weights saw.
    if args.dataset == "synthetic" and not args.random_weights and not args.shipped_weights:
        sources.train_set = load_dataset(args, "train", limit_videos=False)
        sources.cache = checkpoint_cache(args, dataset)
    missing = missing_weights(specs, sources)  # off the synthetic set nothing trains itself
    if missing:
        raise UsageError(f"no weights for {', '.join(missing)} on {args.dataset}: pass --checkpoint SPEC=PATH for "
                         "each (a vssbench checkpoint, or weights in a format of docs/weights.md), or "
                         "--random-weights for a cost or speed study (its rows say weights: random)")
    seeds = (int_list(args.seeds, "--seeds", low=0, expected="integers >= 0, e.g. 0,1,2") if args.seeds
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
    return exit_code(rows)


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
    check_at_least(args.tc_iters, "--tc-iters", expected=ITERATIONS_EXPECTED)
    videos = None if args.tc_videos == "all" else int_list(args.tc_videos, "--tc-videos",
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
    from vssbench.benchmark.plan import (
        machine_scale,
        plan_run,
        plan_text,
        training_lines,
    )
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
