"""bench train: train a method with its recipe and save a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from vssbench.cli.common import (
    ITERATIONS_EXPECTED,
    UsageError,
    add_dataset_arguments,
    check_at_least,
    check_device,
    component_paths,
    load_dataset,
    parse_size,
)
from vssbench.files import check_writable


def add_parser(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a method's trainable parameters with its own loss",
                           description="Train METHOD[:PRESET] on a dataset's training split and save a checkpoint.")
    train.add_argument("--method", required=True, help="METHOD[:PRESET], e.g. perframe:segformer-tiny")
    train.add_argument("--variant", help="method variant (default: the method's default)")
    add_dataset_arguments(train, "train")
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


def command_train(args: argparse.Namespace) -> int:
    import torch

    from vssbench.benchmark import distributed
    from vssbench.benchmark.training import (
        TrainingOptions,
        initial_weights,
        train,
        training_metadata,
    )
    from vssbench.methods.base import METHODS, build_method, parse_spec
    from vssbench.methods.weights import load_weights, save_checkpoint
    from vssbench.recipes import recipe_for

    for value, argument in ((args.iters, "--iters"), (args.batch, "--batch"), (args.micro_batch, "--micro-batch")):
        check_at_least(value, argument,
                        expected=ITERATIONS_EXPECTED if argument == "--iters" else "a positive integer")
    for value, argument in ((args.save_every, "--save-every"), (args.validate_every, "--validate-every")):
        check_at_least(value, argument, low=0, expected="a number of iterations >= 0")
    check_at_least(args.log_every, "--log-every", expected="a positive number of iterations")
    check_at_least(args.validate_interval, "--validate-interval", expected="a positive key-frame interval")
    check_device(args.device)
    if args.amp not in (None, "off") and args.device != "cuda":
        raise UsageError(f"--amp {args.amp}: mixed precision runs on CUDA; add --device cuda")
    crop = parse_size(args.crop, "--crop") if args.crop else None
    inits = component_paths(args.init or [], "--init")
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
