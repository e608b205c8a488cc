"""Cost of a method: parameters, FLOPs of its key and non-key paths, latency and FPS.

FLOPs follow the convention of the papers (fvcore / detectron2): one multiply-add is one
FLOP, counted by tracing each path with ``fvcore.nn.FlopCountAnalysis``. fvcore has no
handle for some operators the methods use, so this module adds them
(:data:`EXTRA_HANDLES`: scaled-dot-product attention, ``baddbmm``); grid sampling (flow
warping, deformable attention) is counted by fvcore's own handle (4 per output element,
bilinear). Every other operator fvcore reports as unsupported must be on
:data:`IGNORED_OPERATORS`, which says why it carries no multiply-adds under this
convention; anything else fails the measurement with the operator's name.

Per-frame average at interval k (docs/cost.md): over a 15-frame clip with key
frames at t % k == 0, (n_key * F_key + n_nonkey * F_nonkey) / 15.

Latency: batch 1, inference mode, warm-up cycles first, then whole key-interval cycles
(a key frame followed by k - 1 non-key frames) of the same paths whose FLOPs are counted,
timed step by step (methods with a memory of frames instead of key frames, STT: steps with a
full memory), with CUDA events and synchronisation on a GPU and ``perf_counter`` on a CPU;
median and inter-quartile range of key and non-key steps separately. FPS at interval k is
k / (key + (k - 1) * non-key) medians, and is always recorded with the device it was
measured on. Speed against the per-frame segmentor, the ratio the regression gate compares,
is timed in alternation with it (:func:`paired_speed_ratio`).
"""

from __future__ import annotations

import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from importlib import resources

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from vssbench.benchmark.memory import PeakMemory
from vssbench.benchmark.results import device_name
from vssbench.methods.base import VideoMethod

CLIP_LENGTH = 15
FLOP_COUNTER = {"name": "fvcore", "convention": "1 multiply-add = 1 FLOP (fvcore/detectron2)"}


class UnsupportedOperatorError(RuntimeError):
    """A traced path used an operator that is neither counted nor known to be free."""


def _sdpa_flops(inputs: list, outputs: list) -> int:
    """QK^T and attention-times-V: B*H*L*S*(E + Ev) multiply-adds."""
    query, key, value = (get_shape(v) for v in inputs[:3])
    *batch, length, embed = query
    source = key[-2]
    return math.prod(batch) * length * source * (embed + value[-1])


def _baddbmm_flops(inputs: list, outputs: list) -> int:
    """beta * input + batch1 @ batch2: the batched product's b*n*m*p multiply-adds."""
    batch, n, m = get_shape(inputs[1])
    return batch * n * m * get_shape(inputs[2])[-1]


EXTRA_HANDLES: dict[str, Callable] = {
    "aten::scaled_dot_product_attention": _sdpa_flops,
    "aten::baddbmm": _baddbmm_flops,
}

_ELEMENTWISE = "element-wise arithmetic: no multiply-add; not counted under the fvcore/detectron2 convention"
_ACTIVATION = "activation or normalisation of scores: element-wise, not counted under the convention"
_REDUCTION = "reduction, pooling or comparison: no multiply-add"
_INDEXING = "creates, copies or selects values: no arithmetic"
IGNORED_OPERATORS: dict[str, str] = {
    **{op: _ELEMENTWISE for op in (
        "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub", "aten::mul", "aten::mul_", "aten::div",
        "aten::div_", "aten::neg", "aten::pow", "aten::sqrt", "aten::rsqrt", "aten::exp", "aten::log", "aten::sin",
        "aten::cos", "aten::abs", "aten::clamp", "aten::clamp_", "aten::clamp_min", "aten::reciprocal",
        "aten::floor", "aten::round", "aten::floor_divide", "aten::remainder", "aten::lerp")},
    **{op: _ACTIVATION for op in (
        "aten::relu", "aten::relu_", "aten::gelu", "aten::sigmoid", "aten::sigmoid_", "aten::softmax",
        "aten::log_softmax", "aten::tanh", "aten::silu", "aten::hardtanh", "aten::leaky_relu", "aten::leaky_relu_", "aten::elu",
        "aten::dropout", "aten::feature_dropout", "aten::normalize")},
    **{op: _REDUCTION for op in (
        "aten::sum", "aten::mean", "aten::max", "aten::min", "aten::amax", "aten::argmax", "aten::max_pool2d",
        "aten::avg_pool2d",
        "aten::topk", "aten::cumsum", "aten::norm", "aten::linalg_vector_norm", "aten::lt", "aten::gt", "aten::le",
        "aten::ge", "aten::eq", "aten::ne", "aten::all", "aten::any", "aten::logical_and", "aten::logical_or",
        "aten::logical_not", "aten::sort", "aten::argsort")},
    **{op: _INDEXING for op in (
        "aten::linspace", "aten::meshgrid", "aten::repeat", "aten::masked_fill", "aten::masked_fill_", "aten::where",
        "aten::arange", "aten::zeros_like", "aten::ones_like", "aten::full_like", "aten::new_zeros", "aten::new_ones",
        "aten::scatter", "aten::scatter_", "aten::gather", "aten::index", "aten::index_put_", "aten::nonzero",
        "aten::clone", "aten::pad", "aten::constant_pad_nd", "aten::roll", "aten::fill_", "aten::copy_",
        "aten::index_copy", "aten::expand_as", "aten::view_as", "aten::unflatten", "aten::cartesian_prod",
        "aten::im2col")},
}


class _PathModule(torch.nn.Module):
    """Lets fvcore trace a zero-argument callable of ``owner`` (whose parameters it registers)."""

    def __init__(self, owner: torch.nn.Module, path: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self.path = path

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        # A path may return a cached tensor unchanged (copy's non-key step); the tracer needs an
        # output computed inside the trace, and a clone costs no FLOPs.
        return self.path().clone()


def count_flops(owner: torch.nn.Module, path: Callable[[], torch.Tensor]) -> tuple[int, dict[str, int]]:
    """Multiply-adds of one call of ``path`` (a computation of ``owner``): (total, by operator).

    Fails on operators that are neither counted nor on the allow-list.
    """
    analysis = FlopCountAnalysis(_PathModule(owner, path), (torch.zeros(1),))
    analysis.set_op_handle(**EXTRA_HANDLES)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # fvcore traces with torch.jit
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        total = int(analysis.total())
    unknown = {op: n for op, n in analysis.unsupported_ops().items() if op not in IGNORED_OPERATORS}
    if unknown:
        raise UnsupportedOperatorError(
            "operators fvcore cannot count and that are not on the allow-list: "
            + ", ".join(f"{op} (x{n})" for op, n in sorted(unknown.items()))
        )
    return total, {op: int(n) for op, n in analysis.by_operator().items()}


def average_over_clip(key: float, nonkey: float, interval: int, clip: int = CLIP_LENGTH) -> float:
    """Per-frame average over a clip with key frames at t % interval == 0."""
    n_key = len(range(0, clip, interval))
    return (n_key * key + (clip - n_key) * nonkey) / clip


def parameter_breakdown(method: VideoMethod) -> tuple[float, dict[str, float]]:
    """Total parameters and parameters per top-level component, in millions."""
    components = {name: sum(p.numel() for p in module.parameters()) / 1e6 for name, module in method.named_children()}
    total = sum(p.numel() for p in method.parameters()) / 1e6
    return round(total, 4), {name: round(value, 4) for name, value in components.items()}


def method_flops(method: VideoMethod, frame: torch.Tensor) -> dict[str, float]:
    """GFLOPs of the key and non-key paths on ``frame``."""
    method.eval()
    with torch.no_grad():
        method.reset()
        paths = method.cost_paths(frame)
        key, _ = count_flops(method, paths["key"])
        nonkey, _ = count_flops(method, paths["nonkey"])
    method.reset()
    return {"gflops_key": key / 1e9, "gflops_nonkey": nonkey / 1e9}


def _median_iqr(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    if len(samples) == 1:
        return {"median": samples[0], "iqr": 0.0, "n": 1}
    quartiles = statistics.quantiles(samples, n=4, method="inclusive")
    return {"median": statistics.median(samples), "iqr": quartiles[2] - quartiles[0], "n": len(samples)}


def latency_summary(key_ms: list[float], nonkey_ms: list[float], intervals: list[int],
                    uses_key_frames: bool) -> dict:
    """Latency medians/IQR and FPS per interval from step timings in milliseconds."""
    key, nonkey = _median_iqr(key_ms), _median_iqr(nonkey_ms)
    fps = {}
    for k in intervals:
        if key is None or (k > 1 and nonkey is None and uses_key_frames):
            continue
        nonkey_median = nonkey["median"] if nonkey else key["median"]
        per_frame = key["median"] if not uses_key_frames else (key["median"] + (k - 1) * nonkey_median) / k
        fps[str(k)] = round(1000.0 / per_frame, 3)
    return {"latency_ms_key": key, "latency_ms_nonkey": nonkey, "fps": fps}


@torch.inference_mode()
def measure_latency(method: VideoMethod, frame: torch.Tensor, intervals: list[int], repeats: int = 5,
                    warmup: int = 1, on_step: Callable[[], None] | None = None) -> dict:
    """Time whole key-interval cycles on ``frame`` (batch 1): the key path, then k - 1 non-key ones.

    The paths timed are those whose FLOPs are counted (``method.cost_paths``), so latency and
    FLOPs describe the same work. Plain steps on a repeated frame would not: a method whose
    work depends on the content skips most of it on a frame compared with itself (TFC refines
    the points whose features differ from the key frame's, none of them then). ``on_step`` is
    called after each of the :func:`latency_steps` timed steps (progress).
    """
    device = frame.device
    method.eval()
    paths = method.cost_paths(frame)
    on_step = on_step or (lambda: None)
    if method.sweep_axis == "memory_frames":
        # No key frames: time steps with a full memory, as the FLOPs are counted.
        samples = []
        for _ in range(warmup + repeats):
            samples.append(_timed(paths["key"], device))
            on_step()
        method.reset()
        return latency_summary(samples[warmup:], [], intervals, uses_key_frames=False)
    cycle = _cycle_length(method, max(intervals))
    key_ms, nonkey_ms = [], []
    for repeat in range(warmup + repeats):
        for t in range(cycle):
            elapsed = _timed(paths["key"] if t == 0 else paths["nonkey"], device)
            on_step()
            if repeat >= warmup:
                (key_ms if t == 0 else nonkey_ms).append(elapsed)
    method.reset()
    return latency_summary(key_ms, nonkey_ms, intervals, method.uses_key_frames)


def latency_steps(method: VideoMethod, intervals: list[int], repeats: int = 5, warmup: int = 1) -> int:
    """How many steps :func:`measure_latency` times."""
    cycle = 1 if method.sweep_axis == "memory_frames" else _cycle_length(method, max(intervals))
    return (warmup + repeats) * cycle


def paired_speed_ratio(method: VideoMethod, reference: VideoMethod, frame: torch.Tensor, interval: int,
                       rounds: int = 5, frames_per_round: int = 10, on_step: Callable[[], None] | None = None) -> dict:
    """The method's FPS at ``interval`` over the FPS of ``reference`` (its per-frame segmentor),
    the two timed in alternation as :func:`measure_latency` times them; the median over rounds.

    Timing both sides round by round, seconds apart, makes a change in the machine's speed (a
    shared CPU, a GPU's clocks) shift both alike, where the FPS of two passes timed minutes
    apart do not. Each side steps through at least ``frames_per_round`` frames a round (whole
    key-interval cycles). This is the speed ratio ``bench check`` compares between runs.
    """
    cycle = _cycle_length(method, interval)
    ratios = []
    for _ in range(rounds):
        ours = measure_latency(method, frame, [interval], math.ceil(frames_per_round / cycle),
                               on_step=on_step)["fps"][str(interval)]
        theirs = measure_latency(reference, frame, [1], frames_per_round, on_step=on_step)["fps"]["1"]
        ratios.append(ours / theirs)
    return {"ratio": round(statistics.median(ratios), 4), "rounds": [round(r, 4) for r in ratios],
            "reference": reference.spec, "interval": interval, "frames_per_round": frames_per_round}


def paired_speed_ratios(method: VideoMethod, reference: VideoMethod, frame: torch.Tensor, intervals: list[int],
                        rounds: int = 5, on_step: Callable[[], None] | None = None) -> dict[str, dict]:
    """:func:`paired_speed_ratio` per interval, keyed like the cost block's ``fps``. A method
    without key frames runs the same step at every interval: it is timed once."""
    if not method.uses_key_frames:
        ratio = paired_speed_ratio(method, reference, frame, 1, rounds, on_step=on_step)
        return {str(k): ratio for k in intervals}
    return {str(k): paired_speed_ratio(method, reference, frame, k, rounds, on_step=on_step) for k in intervals}


def paired_steps(method: VideoMethod, reference: VideoMethod, intervals: list[int], rounds: int = 5,
                 frames_per_round: int = 10) -> int:
    """How many steps :func:`paired_speed_ratios` times, both sides together."""
    timed = intervals if method.uses_key_frames else [1]
    return rounds * sum(latency_steps(method, [k], math.ceil(frames_per_round / _cycle_length(method, k)))
                        + latency_steps(reference, [1], frames_per_round) for k in timed)


def _cycle_length(method: VideoMethod, interval: int) -> int:
    """Steps in one timed cycle: a key frame and its k - 1 non-key frames, or one step for a
    method without key frames."""
    return interval if method.uses_key_frames else 1


def _timed(call: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call: CUDA events on a GPU, perf_counter on a CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000.0


def peak_memory(method: VideoMethod, frame: torch.Tensor) -> dict:
    """The peak memory of one key and one non-key step on ``frame`` (the paths whose FLOPs are counted;
    a memory method's step with its memory full), over what was allocated before them
    (:class:`~vssbench.benchmark.memory.PeakMemory`): ``peak_memory_mib`` and how it was measured."""
    method.eval()
    with torch.no_grad():
        paths = method.cost_paths(frame)
        with PeakMemory(frame.device) as peak:
            paths["key"]()
            if "nonkey" in paths and method.uses_key_frames and method.sweep_axis != "memory_frames":
                paths["nonkey"]()
    method.reset()
    return {"peak_memory_mib": peak.mib, "peak_memory": peak.kind}


def cost_block(method: VideoMethod, frame: torch.Tensor, intervals: list[int], latency: dict | None) -> dict:
    """The ``cost`` object of a result row: parameters, FLOPs per path and interval, latency, FPS, and the
    peak memory of a key and a non-key step."""
    params, by_component = parameter_breakdown(method)
    memory = peak_memory(method, frame)  # before FLOP counting, whose tracing holds memory of its own
    flops = method_flops(method, frame)
    key, nonkey = flops["gflops_key"], flops["gflops_nonkey"]
    block = {
        "params_m": params,
        "params_by_component_m": by_component,
        "gflops_key": round(key, 4),
        "gflops_nonkey": round(nonkey, 4),
        "gflops_avg": {str(k): round(average_over_clip(key, nonkey, k), 4) for k in intervals},
        "flop_resolution": list(frame.shape[-2:]),
        "flop_counter": FLOP_COUNTER,
        "device": device_name(frame.device),
        **method.cost_settings(),
        **memory,
    }
    if latency is not None:
        block.update(latency)
    return block


def published_numbers() -> dict:
    """Published architecture costs and their sources (``vssbench/published.json``)."""
    return json.loads(resources.files("vssbench").joinpath("published.json").read_text())
