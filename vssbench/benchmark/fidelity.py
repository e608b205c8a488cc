"""Fidelity: our architectures' cost against every published number (``vssbench/published.json``).

Each entry names a table and row of a paper, the spec (and variant) that builds that
configuration, the resolution and class count of the paper's measurement, and the published
quantities: ``params_m`` (all parameters), ``<component>_params_m`` (one top-level component,
e.g. MPVSS's flow module), ``gflops_key`` / ``gflops_nonkey`` (one key / non-key frame) and
``gflops_avg_k5`` (the per-frame average over a 15-frame clip at key-frame interval 5, the
papers' protocol). Every configuration is built once, at the paper's resolution, and measured
by the profiler that measures ``bench run`` rows.

A quantity is ``ok`` within the tolerance (3% for parameters, 10% for GFLOPs). Outside it, the
entry must carry a cause, and the cause its number recomputed: either the published number
recomputed under it (``recomputed``, e.g. a misprinted sum), or ours measured under the
conditions it names (``measure``: another resolution, class count or variant). The status is
then ``explained`` when the recomputed pair agrees within tolerance, ``explained in part`` when
it does not (the remaining gap is printed); an entry outside tolerance without a cause, or a
cause without a recomputed number, is ``unexplained`` and makes ``bench profile --fidelity``
exit 1.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass

import torch
from tabulate import tabulate

from vssbench.benchmark.profiler import average_over_clip, method_flops, parameter_breakdown, published_numbers
from vssbench.methods.base import SpecError, build_method, parse_spec
from vssbench.progress import Progress

QUANTITY_NAMES = {"params_m": "params (M)", "gflops_key": "GFLOPs key", "gflops_nonkey": "GFLOPs non-key",
                  "gflops_avg_k5": "GFLOPs avg k=5"}
STATUSES = ("ok", "explained", "explained in part", "unexplained", "not implemented")
STATUSES_THAT_FAIL = ("unexplained",)


@dataclass(frozen=True)
class Configuration:
    """What one measurement builds: a spec and variant at a resolution and class count."""

    spec: str
    variant: str | None
    resolution: tuple[int, int]
    num_classes: int

    @classmethod
    def of(cls, entry: dict, overrides: dict | None = None) -> Configuration:
        values = {**entry, **(overrides or {})}
        return cls(values["spec"], values.get("variant"), tuple(values["resolution"]), values["num_classes"])


@dataclass
class Comparison:
    """One published quantity against ours."""

    entry: dict
    quantity: str
    published: float
    ours: float | None
    status: str  # one of STATUSES
    recomputed: str = ""  # the pair under the entry's cause, as text
    detail: str = ""  # why there is no number: the missing quantity, or why the spec does not build

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"fidelity status {self.status!r} is not one of {STATUSES}")

    @property
    def difference(self) -> float | None:
        return None if self.ours is None else (self.ours - self.published) / self.published


def _tolerance(quantity: str, tolerance: dict) -> float:
    return tolerance["params"] if quantity.endswith("params_m") else tolerance["gflops"]


def measure(configuration: Configuration) -> dict[str, float]:
    """Parameters (total and per component) and GFLOPs of both paths and at interval 5."""
    torch.manual_seed(0)
    method = build_method(configuration.spec, configuration.num_classes, configuration.variant)
    total, components = parameter_breakdown(method)
    flops = method_flops(method, torch.randn(1, 3, *configuration.resolution))
    del method
    gc.collect()
    return {"params_m": total, **{f"{name}_params_m": value for name, value in components.items()}, **flops,
            "gflops_avg_k5": average_over_clip(flops["gflops_key"], flops["gflops_nonkey"], 5)}


def _configurations(entries: list[dict]) -> list[Configuration]:
    """Every configuration the entries and their causes need, in order, each once."""
    needed: dict[Configuration, None] = {}
    for entry in entries:
        needed[Configuration.of(entry)] = None
        for cause in (entry.get("causes") or {}).values():
            if cause.get("measure"):
                needed[Configuration.of(entry, cause["measure"])] = None
    return list(needed)


def compare(entries: list[dict], tolerance: dict, progress: bool = False) -> list[Comparison]:
    """Measure what the entries need and compare every published quantity with ours."""
    measured: dict[Configuration, dict | str] = {}
    configurations = _configurations(entries)
    track = Progress(len(configurations), "fidelity", unit="configuration", every=5.0, enabled=progress)
    for configuration in track.track(configurations):
        try:
            parse_spec(configuration.spec)
            measured[configuration] = measure(configuration)
        except SpecError as error:
            measured[configuration] = str(error)
    comparisons = []
    for entry in entries:
        ours_all = measured[Configuration.of(entry)]
        for quantity, published in entry["published"].items():
            if isinstance(ours_all, str):
                comparisons.append(Comparison(entry, quantity, published, None, "not implemented", detail=ours_all))
                continue
            ours = ours_all.get(quantity)
            if ours is None:
                comparisons.append(Comparison(entry, quantity, published, None, "unexplained",
                                              detail=f"no {quantity}"))
                continue
            limit = _tolerance(quantity, tolerance)
            if abs(ours - published) <= limit * published:
                comparisons.append(Comparison(entry, quantity, published, ours, "ok"))
                continue
            cause = (entry.get("causes") or {}).get(quantity)
            comparisons.append(Comparison(entry, quantity, published, ours,
                                          *_under_cause(cause, entry, quantity, published, ours, limit, measured)))
    return comparisons


def _under_cause(cause: dict | None, entry: dict, quantity: str, published: float, ours: float, limit: float,
                 measured: dict) -> tuple[str, str]:
    """Status and recomputed pair of a quantity outside tolerance."""
    if not cause:
        return "unexplained", ""
    if "recomputed" not in cause and "measure" not in cause:
        return "unexplained", "(the cause gives no recomputed number)"
    theirs = cause.get("recomputed", published)
    mine = measured[Configuration.of(entry, cause["measure"])][quantity] if cause.get("measure") else ours
    gap = (mine - theirs) / theirs
    pair = f"{mine:.2f} vs {theirs:.2f} ({100 * gap:+.1f}%)"
    return ("explained" if abs(gap) <= limit else "explained in part"), pair


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def fidelity_report(numbers: dict | None = None, progress: bool = False) -> tuple[str, int]:
    """The fidelity table in Markdown, with each cause, and how many quantities are unexplained, for
    ``numbers`` in the layout of ``vssbench/published.json`` (default: that file)."""
    numbers = numbers or published_numbers()
    comparisons = compare(numbers["entries"], numbers["tolerance"], progress)
    table, causes = [], []
    for c in comparisons:
        variant = f" ({c.entry['variant']})" if c.entry.get("variant") else ""
        quantity = QUANTITY_NAMES.get(c.quantity, c.quantity.replace("_params_m", " params (M)"))
        difference = "-" if c.difference is None else f"{100 * c.difference:+.1f}%"
        status = f"{c.status}: {c.detail}" if c.detail else c.status
        cause = (c.entry.get("causes") or {}).get(c.quantity)
        if cause and c.status != "ok":
            causes.append(f"{len(causes) + 1}. **{c.entry['row']}** ({c.entry['table']}), {quantity}: "
                          f"{cause['cause']} Under it: ours vs published {c.recomputed}.")
            status = f"{status} [{len(causes)}]"
        table.append([c.entry["table"], c.entry["row"], f"`{c.entry['spec']}`{variant}",
                      "x".join(map(str, c.entry["resolution"])), quantity, _format(c.published), _format(c.ours),
                      difference, status])
    failures = sum(c.status in STATUSES_THAT_FAIL for c in comparisons)
    counts = {s: sum(c.status == s for c in comparisons) for s in STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    headers = ["source", "row", "spec", "resolution", "quantity", "published", "ours", "difference", "status"]
    body = tabulate(table, headers=headers, tablefmt="github", disable_numparse=True)
    tolerance = numbers["tolerance"]
    text = (
        "# Fidelity of architecture cost\n\n"
        "Every published parameter count and GFLOPs figure of the papers (`vssbench/published.json`) against "
        "vssbench's build of that configuration, at the paper's resolution and class count. FLOPs: fvcore, "
        "1 multiply-add = 1 FLOP, attention and grid sampling counted; averages over a 15-frame clip at key-frame "
        f"interval 5. Tolerance: {100 * tolerance['params']:.0f}% for parameters, {100 * tolerance['gflops']:.0f}% "
        "for GFLOPs; a quantity outside it carries its cause and the number recomputed under it. Generated by "
        f"`bench profile --fidelity`.\n\n{len(comparisons)} quantities: {summary}.\n\n{body}\n"
    )
    if causes:
        text += "\n## Causes\n\n" + "\n".join(causes) + "\n"
    text += "\n## Sources\n\n" + "\n".join(f"- {name}: {what}" for name, what in numbers["tables"].items()) + "\n"
    return text, failures
