"""The runner: streams a dataset through a method under a key-frame schedule into metrics.

One pass per (method, schedule; for STT, per memory length). Frames are loaded outside the
timed region (a DataLoader with worker processes on CUDA; on a CPU one background thread,
:func:`prefetched`), handed to ``method.step`` with ``is_key`` from the schedule; the
scores are upsampled to the label's resolution, argmax'ed and fed straight into the
accumulators. Nothing per frame is kept except what VC needs. The time spent inside
``step`` is recorded next to the wall time of the pass, so harness overhead is visible.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vssbench.benchmark import distributed
from vssbench.benchmark.metrics import SegmentationMetrics
from vssbench.benchmark.profiler import cost_block, latency_summary, paired_speed_ratio
from vssbench.benchmark.results import ResultFile, RunRow, config_hash, environment, run_row
from vssbench.benchmark.tc import TCSettings, TemporalConsistency, raft_flow
from vssbench.datasets.base import DatasetError, FrameStream, VideoDataset, as_tensors
from vssbench.limits import plain_name
from vssbench.methods.base import METHODS, KeySchedule, SpecError, VideoMethod, build_method, parse_spec
from vssbench.methods.weights import CheckpointError, checkpoint_metadata, weights_digest
from vssbench.progress import Progress

log = logging.getLogger("vssbench")


class MethodError(RuntimeError):
    """A method produced unusable output (wrong shape, NaN or infinite scores)."""


@dataclass
class EvaluationOptions:
    device: str = "cpu"
    miou_mode: str = "vspw"
    vc_protocol: str = "vspw"
    # None: 0 on a CPU device, where loader processes take cores from the method and inflate its
    # step time (measured on 2 cores: +40% step time for 0.4 s of loading saved); 2 on CUDA.
    num_workers: int | None = None
    progress: bool = True
    # Rounds of paired timing of each video-method row against its per-frame segmentor
    # (:func:`paired_speed_ratio`, the ratio ``bench check`` compares); 0 skips it.
    speed_rounds: int = 5
    tc: TCSettings | None = None  # --metrics tc: VSPW's temporal consistency with this flow network
    cycles: int = 1  # --cycles: every video run (and scored) this many times, DCFM's ``cicle`` (KeySchedule)


@dataclass
class Evaluation:
    metrics: dict
    step_seconds: float  # time inside method.step, synchronised
    wall_seconds: float  # the whole pass, loading included
    frames: int
    key_ms: list[float]  # per-step latency of key and non-key steps, for the cost block
    nonkey_ms: list[float]
    sample_frame: torch.Tensor  # the first input frame, for FLOP counting at the evaluated resolution
    metric_code: str | None  # SegmentationMetrics.per_pixel_code: "c", "torch" or "c+torch"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def evaluate(
    method: VideoMethod,
    dataset: VideoDataset,
    schedule: KeySchedule,
    options: EvaluationOptions,
    predictions_dir: Path | None = None,
) -> Evaluation:
    """Run ``method`` over every video of ``dataset`` and return its metrics (docs/metrics.md).

    Under torchrun each process evaluates its share of the videos and every process returns
    the merged result, equal to a single process's.
    """
    device = torch.device(options.device)
    if predictions_dir is not None and schedule.cycles > 1:
        raise ValueError(f"saving predictions of {schedule.cycles} cycles of each video would keep the last only")
    if predictions_dir is not None:  # every file written lies under predictions_dir/<video>/
        for video in dataset.videos:
            plain_name(video.name, f"dataset {dataset.root}", DatasetError)
    method.to(device).eval()
    metrics = SegmentationMetrics(dataset.num_classes, device, options.miou_mode, options.vc_protocol)
    # With schedule.cycles = c every video is run c times in a row; a run's index counts as its video's
    # (KeySchedule), and TC's first N videos are their first N * c runs.
    cycles = schedule.cycles
    tc = (TemporalConsistency(dataset.num_classes, raft_flow(options.tc.flow, options.tc.iterations, device),
                              options.tc.videos and options.tc.videos * cycles) if options.tc else None)
    workers = options.num_workers if options.num_workers is not None else (2 if device.type == "cuda" else 0)
    videos, video_indices = distributed.shard([video for video in dataset.videos for _ in range(cycles)])
    stream = FrameStream(dataset, videos, raw=tc is not None)
    loader = (torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda")
              if workers else prefetched(stream))
    key_ms, nonkey_ms, sample_frame, wall_start = [], [], None, time.perf_counter()
    description = (f"{method.spec} k={schedule.interval}" if method.uses_key_frames
                   else f"{method.spec} M={method.memory_frames}" if method.sweep_axis == "memory_frames" else method.spec)
    progress = Progress(len(stream), description, unit="frame", enabled=options.progress and distributed.is_main_process())
    global_index = dict(enumerate(video_indices))  # the stream's video -> its index in the dataset
    frame_size = None  # the size TC's frames are scored at
    for item, scores, is_key, ms in stepped(method, schedule, progress.track(loader), device, global_index):
        sample_frame = item["image"].unsqueeze(0).to(device) if sample_frame is None else sample_frame
        (key_ms if is_key else nonkey_ms).append(ms)
        label = item["label"]
        if label.numel():
            prediction = predict_labels(scores, tuple(label.shape), method, item)
            metrics.update(prediction, label.to(device))
            if tc is not None and tc.counts(global_index[item["video_index"]]):
                tc.update(item["raw"], prediction, global_index[item["video_index"]], item["frame_index"])
                frame_size = frame_size or tuple(label.shape)
            if predictions_dir is not None:
                save_prediction(prediction, predictions_dir / item["video"] / f"{item['stem']}.png")
        if item["is_last"]:
            metrics.end_video()
            if tc is not None:
                tc.end_video()
    progress.close()
    shards = distributed.gather({"metrics": metrics.state(), "videos": video_indices, "key_ms": key_ms,
                                 "nonkey_ms": nonkey_ms, "tc": tc and tc.state(), "frame_size": frame_size})
    if len(shards) > 1:
        metrics = SegmentationMetrics.merged([s["metrics"] for s in shards], [s["videos"] for s in shards], metrics)
        if tc is not None:
            tc.merge([s["tc"] for s in shards])
            frame_size = next((s["frame_size"] for s in shards if s["frame_size"]), None)
        key_ms = [ms for s in shards for ms in s["key_ms"]]
        nonkey_ms = [ms for s in shards for ms in s["nonkey_ms"]]
    if sample_frame is None:  # a process with no video (more processes than videos) still counts FLOPs
        sample_frame = FrameStream(dataset)[0]["image"].unsqueeze(0).to(device)
    return Evaluation(
        metrics={**metrics.summary(dataset.class_names),
                 **(tc.summary(options.tc, frame_size) if tc is not None else {})},
        step_seconds=(sum(key_ms) + sum(nonkey_ms)) / 1000.0,
        wall_seconds=time.perf_counter() - wall_start,
        frames=len(key_ms) + len(nonkey_ms),
        key_ms=key_ms,
        nonkey_ms=nonkey_ms,
        sample_frame=sample_frame,
        metric_code=metrics.per_pixel_code,
    )


def stepped(
    method: VideoMethod,
    schedule: KeySchedule,
    items: Iterable[dict],
    device: torch.device,
    global_index: dict[int, int] | None = None,
) -> Iterator[tuple[dict, torch.Tensor, bool, float]]:
    """Each item of ``items`` (videos in turn, frames in display order) with the method's scores for it,
    whether it was a key frame and the milliseconds ``step`` took, yielded in display order.

    A method with ``key_lookahead`` is stepped out of display order, as DCFM's official test runs: each key
    frame first, then the non-key frames before it (back to the last key frame), whose scores may use both;
    the non-key frames after a video's last key frame follow ``no_next_key``. The frames held meanwhile are
    at most one key interval. ``global_index`` maps an item's ``video_index`` to the video's index in the
    dataset (a shard's videos are every N-th), which a rotating schedule reads.
    """
    def step(item: dict, is_key: bool) -> tuple[dict, torch.Tensor, bool, float]:
        frame = item["image"].unsqueeze(0).to(device, non_blocking=True)
        synchronize(device)
        started = time.perf_counter()
        scores = method.step(frame, is_key)
        synchronize(device)
        return item, scores, is_key, (time.perf_counter() - started) * 1000.0

    pending: list[dict] = []  # non-key frames waiting for the next key frame
    for item in items:
        if item["is_first"]:
            method.reset()
        video = (global_index or {}).get(item.get("video_index", 0), item.get("video_index", 0))
        is_key = schedule.is_key(item["frame_index"], video) or not method.uses_key_frames
        if not method.key_lookahead:
            yield step(item, is_key)
            continue
        if is_key:
            key = step(item, True)
            for waiting in pending:
                yield step(waiting, False)
            pending = []
            yield key
        else:
            pending.append(item)
        if item["is_last"] and pending:
            method.no_next_key()
            for waiting in pending:
                yield step(waiting, False)
            pending = []


PREFETCH_BYTES = 256 * 2**20  # frames a CPU run loads ahead: the whole synthetic val split, ~50 VSPW frames


def prefetched(stream: FrameStream, max_bytes: int = PREFETCH_BYTES) -> Iterator[dict]:
    """The stream's items in order, loaded by a background thread while the method runs.

    The thread runs only PIL and NumPy work, which leaves torch's thread pool to the method
    (``FrameStream.load``); the tensors are wrapped here. It runs ahead by up to ``max_bytes``
    of loaded items (at least one): each time it wakes it competes with the method for the
    interpreter, so loading far ahead in long runs costs the pass less than one frame per step
    (segformer-tiny on the synthetic set, 2-core CPU, medians of six passes each: time outside
    ``step`` 0.19 s against 0.35 s with two frames ahead, wall/steps 1.075 against 1.128). An
    error loading an item is raised here, in order."""
    items: queue.Queue = queue.Queue()
    room = threading.Condition()
    buffered = 0  # bytes loaded and not yet consumed, guarded by ``room``
    stop = threading.Event()

    def may_load() -> bool:
        return buffered < max_bytes or stop.is_set()

    def load() -> None:
        nonlocal buffered
        for index in range(len(stream)):
            with room:
                room.wait_for(may_load)
            if stop.is_set():
                return
            try:
                item = stream.load(index)
            except Exception as error:  # noqa: BLE001 - handed to the consumer, which raises it
                items.put((None, error))
                return
            with room:
                buffered += _item_bytes(item)
            items.put((item, None))

    loader = threading.Thread(target=load, name="vssbench-prefetch", daemon=True)
    loader.start()
    try:
        for _ in range(len(stream)):
            item, error = items.get()
            if error is not None:
                raise error
            with room:
                buffered -= _item_bytes(item)
                room.notify()
            yield as_tensors(item)
    finally:
        stop.set()
        with room:
            room.notify()
        loader.join()


def _item_bytes(item: dict) -> int:
    return item["image"].nbytes + item["label"].nbytes + (item["raw"].nbytes if "raw" in item else 0)


def predict_labels(scores: torch.Tensor, size: tuple[int, int], method: VideoMethod, item: dict) -> torch.Tensor:
    """Class scores (1, C, h, w) -> labels (H, W) at the ground truth's size, checking the scores first."""
    where = f"{item['video']}/{item['stem']}"
    if scores.ndim != 4 or scores.shape[:2] != (1, method.num_classes):
        raise MethodError(f"{method.spec} returned scores of shape {tuple(scores.shape)} on {where}; "
                          f"expected (1, {method.num_classes}, H, W)")
    # The sum is non-finite whenever an element is; the element-wise check runs only then.
    if not torch.isfinite(scores.sum()) and not torch.isfinite(scores).all():
        raise MethodError(f"{method.spec} returned NaN or infinite scores on {where}")
    if scores.shape[-2:] != size:
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    # max(dim).indices equals argmax (the first maximal index) and is several times faster on CPUs.
    return scores[0].max(0).indices.to(torch.uint8)


def save_prediction(prediction: torch.Tensor, path: Path) -> None:
    """A uint8 PNG with values 0..C-1, as the VSPW evaluation scripts read them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(prediction.cpu().numpy().astype(np.uint8)).save(path)


@dataclass
class PreparedWeights:
    """Where a method's weights came from, as ``prepare`` reports it to the runner.

    ``checkpoint`` is the file or folder named (or the cached or shipped checkpoint), ``sources``
    the :meth:`~vssbench.methods.weights.LoadRecord.as_row` of each file loaded, ``declared`` the record
    a vssbench checkpoint carries about itself (None: read it from ``checkpoint``), and ``random`` the
    parameters left at random initialisation, per part: rows of such weights say ``weights: random``.
    """

    checkpoint: Path | None = None
    sources: list[dict] = field(default_factory=list)
    random: dict[str, int] = field(default_factory=dict)
    declared: dict | None = None
    shipped: dict | None = None  # weights shipped with vssbench: how they were made (its manifest)

    def row_block(self) -> dict | None:
        """The row's ``checkpoint`` object (docs/rows.md). What vssbench verified: the path, its sha256, the
        format detected and the tensors mapped (``sources``, each file read named with its sha256). What
        the checkpoint says about itself (how it was trained or converted) sits apart, under ``declared``:
        vssbench copies it from the file and cannot check it."""
        if self.checkpoint is None and not self.sources:
            return None
        declared = dict(self.declared if self.declared is not None
                        else checkpoint_metadata(self.checkpoint) if self.checkpoint else {})
        converted_from = declared.pop("converted_from", None)
        # The load already hashed the file it read (a folder: its files); only a cached checkpoint that
        # training wrote, which no load recorded, is hashed here.
        loaded = next((source["sha256"] for source in self.sources if source["file"] == str(self.checkpoint)), None)
        return {"path": str(self.checkpoint) if self.checkpoint else None,
                "sha256": loaded or (weights_digest(self.checkpoint) if self.checkpoint else None),
                "sources": self.sources,
                "declared": ({"by": "checkpoint", "training": declared or None, "converted_from": converted_from}
                             if declared or converted_from else None),
                **({"shipped": self.shipped} if self.shipped else {})}


@dataclass
class SweepSettings:
    specs: list[str]
    intervals: list[int]
    memory_frames: list[int] = field(default_factory=lambda: list(range(8)))  # STT's sweep axis, M
    variants: list[str] | None = None  # None: each method's default variant
    output: Path = Path("results/run.jsonl")
    predictions_dir: Path | None = None
    seed: int = 0
    overwrite: bool = False
    evaluation: EvaluationOptions = field(default_factory=EvaluationOptions)


def row_label(method: str, preset: str, variant: str, default_variant: str, suffix: str | None = None) -> str:
    """A short, filesystem-safe name of a row (``copy_segformer-tiny_k5``), for prediction folders and tables."""
    parts = [method, preset] + ([variant] if variant != default_variant else []) + ([suffix] if suffix else [])
    return "_".join(parts)


def run_sweep(
    settings: SweepSettings,
    dataset: VideoDataset,
    prepare: Callable[[VideoMethod], PreparedWeights],
) -> list[dict]:
    """Evaluate every (method, variant, interval) and write each row as soon as it is done.

    ``prepare`` loads or trains a freshly built method's weights and says where they came from
    (:class:`PreparedWeights`). A method that fails becomes an error row and the sweep goes on;
    bad dataset input and weights that do not fit stop the sweep (bad input, exit 2).
    """
    plan = sweep_plan(settings.specs, settings.variants)
    results = ResultFile(settings.output, overwrite=settings.overwrite)
    planned = sum(len(sweep_points(METHODS[parse_spec(spec)[0]], settings)) for spec, _ in plan)
    rows = []
    with Progress(planned, "sweep", unit="row", every=0,
                  enabled=settings.evaluation.progress and distributed.is_main_process()) as progress:
        for spec, variant in plan:
            rows.extend(_run_method(spec, variant, settings, dataset, prepare, results,
                                    lambda row: progress.update(last=row["label"], status=row["status"])))
    return rows


def sweep_plan(specs: list[str], variants: list[str] | None) -> list[tuple[str, str]]:
    """The (spec, variant) pairs a sweep runs, in order; an unknown variant name is an error."""
    _check_variant_names(specs, variants)
    return [(spec, variant) for spec in specs for variant in _variants_for(spec, variants)]


def _check_variant_names(specs: list[str], requested: list[str] | None) -> None:
    """Every requested variant must belong to some method of the sweep: a typo is an error, not a skip."""
    if requested is None or requested == ["all"]:
        return
    classes = {spec: METHODS[parse_spec(spec)[0]] for spec in specs}
    known = {"default"}.union(*(cls.variants for cls in classes.values()))
    unknown = [v for v in requested if v not in known]
    if unknown:
        valid = "; ".join(f"{spec}: {', '.join(cls.variants)}" for spec, cls in classes.items())
        raise SpecError(f"unknown variant {', '.join(map(repr, unknown))} for {', '.join(specs)}; valid variants "
                        f"('default' names each method's first): {valid}")


def _variants_for(spec: str, requested: list[str] | None) -> list[str]:
    """The variants of ``spec`` to run. 'default' names its default variant and 'all' every one;
    a method without variants runs its only one whatever is requested."""
    cls = METHODS[parse_spec(spec)[0]]
    if requested is None or len(cls.variants) == 1:
        return [cls.variants[0]]
    if requested == ["all"]:
        return list(cls.variants)
    named = (cls.variants[0] if v == "default" else v for v in requested)
    chosen = list(dict.fromkeys(v for v in named if v in cls.variants))
    if not chosen:
        raise SpecError(f"none of the variants {requested} exists for {spec}; valid variants: {', '.join(cls.variants)}")
    return chosen


def _run_method(
    spec: str,
    variant: str,
    settings: SweepSettings,
    dataset: VideoDataset,
    prepare: Callable[[VideoMethod], PreparedWeights],
    results: ResultFile,
    on_row: Callable[[dict], None],
) -> list[dict]:
    """Every row of one (method, variant): prepared once, scored at each point of its sweep axis; a
    finished row of the same configuration is kept, a failure becomes an error row."""
    # Every method starts from the initialisation its seed gives, whatever the sweep built or trained
    # before it, so auto-trained weights do not depend on the sweep's composition or the cache's state.
    torch.manual_seed(settings.seed)
    method = build_method(spec, dataset.num_classes, variant)
    weights, prepare_error = PreparedWeights(), None
    try:
        weights = prepare(method)
    except (DatasetError, SpecError, CheckpointError):
        raise
    except Exception as error:  # a method that cannot be prepared fails its rows, not the sweep
        prepare_error = error
    checkpoint_info = weights.row_block()
    rows = []
    reference: list[VideoMethod] = []  # the per-frame segmentor timed against, built at the first row needing it
    for schedule, schedule_config, suffix in sweep_points(method, settings):
        config = {**run_configuration(method, dataset, settings), "schedule": schedule_config,
                  "checkpoint_sha256": checkpoint_info and checkpoint_info["sha256"]}
        done = results.finished(config_hash(config))
        if done and not settings.overwrite:
            log.info("skipping %s %s: finished row %s in %s", spec, suffix, done["config_hash"], settings.output)
            rows.append(done)
            on_row(done)
            continue
        if "memory_frames" in schedule_config:
            method.memory_frames = schedule_config["memory_frames"]
        label = row_label(method.name, method.preset, variant, type(method).variants[0], suffix)
        row = run_row(config, label, method.segmentor_preset, weights.random, checkpoint_info,
                      environment(settings.evaluation.device, settings.seed))
        try:
            if prepare_error is not None:
                raise prepare_error
            _score(row, method, dataset, schedule, settings, reference)
        except DatasetError:
            raise
        except Exception as error:  # noqa: BLE001 - every method failure becomes an error row
            row["status"] = "error"
            row["error"] = f"{type(error).__name__}: {error}"
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()  # let the next rows start from a clean allocator
            log.error("%s %s failed: %s", spec, suffix, row["error"])
            log.debug("%s", traceback.format_exc())  # bench --debug or --verbose
        if distributed.is_main_process():
            results.put(row)
        rows.append(row)
        on_row(row)
    return rows


def run_configuration(method: VideoMethod, dataset: VideoDataset, settings: SweepSettings) -> dict:
    """What a run row's ``config_hash`` covers, less the schedule and the checkpoint's digest: a re-run is
    matched on it, so a field is added only where it is set (``tc``), keeping other rows' hashes."""
    return {
        "method": method.name,
        "preset": method.preset,
        "variant": method.variant,
        "dataset": dataset.name,
        "split": dataset.split,
        "resolution": _resolution(dataset),
        "videos": dataset.selection(),
        "device": settings.evaluation.device,
        "miou_mode": settings.evaluation.miou_mode,
        "vc_protocol": settings.evaluation.vc_protocol,
        "seed": settings.seed,
        **({"tc": settings.evaluation.tc.row_block()} if settings.evaluation.tc else {}),
    }


def _score(row: RunRow, method: VideoMethod, dataset: VideoDataset, schedule: KeySchedule, settings: SweepSettings,
           reference: list[VideoMethod]) -> None:
    """Fill ``row``'s metrics, cost, timing and predictions folder from one evaluation of ``method``."""
    predictions = settings.predictions_dir / row["label"] if settings.predictions_dir else None
    evaluation = evaluate(method, dataset, schedule, settings.evaluation, predictions)
    row["metrics"] = evaluation.metrics
    latency = latency_summary(evaluation.key_ms, evaluation.nonkey_ms, [schedule.interval], method.uses_key_frames)
    row["cost"] = cost_block(method, evaluation.sample_frame, [schedule.interval], latency)
    if settings.evaluation.speed_rounds and timed_against_per_frame(method):
        if not reference:
            reference.append(per_frame_reference(method, settings.evaluation.device))
        row["cost"]["speed_vs_per_frame"] = paired_speed_ratio(method, reference[0], evaluation.sample_frame,
                                                               schedule.interval, rounds=settings.evaluation.speed_rounds)
    row["timing"] = {"step_seconds": round(evaluation.step_seconds, 4), "wall_seconds": round(evaluation.wall_seconds, 4),
                     "frames": evaluation.frames, "metric_code": evaluation.metric_code}
    row["predictions_dir"] = str(predictions) if predictions else None


def timed_against_per_frame(method: VideoMethod) -> bool:
    """Whether ``method``'s speed is taken against its per-frame segmentor's: every method's but a
    per-frame one's, which is that reference itself (its ratio is 1)."""
    return method.name != "perframe"


def per_frame_reference(method: VideoMethod, device: str) -> VideoMethod:
    """The per-frame run of ``method``'s image segmentor, for timing against: random weights, whose
    values its speed does not depend on, drawn without moving the global random state."""
    with torch.random.fork_rng(devices=[]):
        reference = build_method(f"perframe:{method.segmentor_preset}", method.num_classes)
    return reference.to(device).eval()


def sweep_points(method: VideoMethod | type[VideoMethod], settings: SweepSettings) -> list[tuple[KeySchedule, dict, str]]:
    """(key schedule, the row's ``schedule`` object, label suffix) for each point of the method's sweep axis
    (a class will do: the axis is a class attribute)."""
    if method.sweep_axis == "memory_frames":
        cycles = {"cycles": settings.evaluation.cycles} if settings.evaluation.cycles > 1 else {}
        return [(KeySchedule(1, cycles=settings.evaluation.cycles), {"type": "memory", "memory_frames": m, **cycles},
                 f"m{m}") for m in settings.memory_frames]
    intervals = settings.intervals if method.uses_key_frames else [1]
    schedules = [replace(method.key_schedule(k) if isinstance(method, VideoMethod) else KeySchedule(k),
                         cycles=settings.evaluation.cycles) for k in intervals]
    return [(schedule, schedule.record(), f"k{schedule.interval}") for schedule in schedules]


def _resolution(dataset: VideoDataset) -> list[int] | str:
    if dataset.label_size is not None:  # only then, so that the rows of other runs keep their hashes
        return (f"exact {dataset.input_size[0]}x{dataset.input_size[1]}, labels resized to "
                f"{dataset.label_size[0]}x{dataset.label_size[1]} (nearest)")
    if dataset.short_side is not None:
        return f"short side {dataset.short_side}, labels at their own size"
    if dataset.input_size is not None:
        return list(dataset.input_size)
    scale = getattr(dataset, "keep_ratio_scale", None)
    return f"keep-ratio {scale[0]}x{scale[1]}" if scale else "native"

