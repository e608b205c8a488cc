"""The tables the command line prints: a run's rows, a profile's costs, the recipes, the method registry
(Markdown or plain text; ``bench report`` writes the report's own tables)."""

from __future__ import annotations

from tabulate import tabulate

from vssbench.benchmark.results import schedule_text


def run_table(rows: list[dict]) -> str:
    """The rows of a run as a Markdown table (metrics in percent)."""
    def fmt(value: object) -> str:
        return "-" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)

    names = {"miou": "mIoU", "wiou": "WIoU", "mvc8": "mVC8", "mvc16": "mVC16"}
    if any((row.get("metrics") or {}).get("tc_protocol") for row in rows):
        names["tc"] = "TC"
    table = []
    for row in rows:
        metrics = row.get("metrics") or {}
        random_flow = ((metrics.get("tc_protocol") or {}).get("flow") or {}).get("random")
        table.append([row["label"], row["method"], row["preset"], row["variant"], schedule_text(row["schedule"]),
                      *(fmt(metrics.get(k)) + (" (random RAFT)" if k == "tc" and random_flow else "") for k in names),
                      row["status"]])
    headers = ["label", "method", "preset", "variant", "schedule", *names.values(), "status"]
    return tabulate(table, headers=headers, tablefmt="github")


def cost_table(rows: list[dict], intervals: list[int]) -> str:
    """Cost rows as a Markdown table; FPS carries the device it was measured on. Speed ratios
    against the per-frame segmentor get columns when a row has them."""
    paired = any((row.get("cost") or {}).get("speed_vs_per_frame") for row in rows)
    table = []
    for row in rows:
        cost = row.get("cost") or {}
        latency = {k: (cost.get(f"latency_ms_{k}") or {}).get("median") for k in ("key", "nonkey")}
        ratios = cost.get("speed_vs_per_frame") or {}
        table.append([row["label"], cost.get("params_m"), cost.get("gflops_key"), cost.get("gflops_nonkey"),
                      *((cost.get("gflops_avg") or {}).get(str(k)) for k in intervals),
                      latency["key"], latency["nonkey"], *((cost.get("fps") or {}).get(str(k)) for k in intervals),
                      *((ratios.get(str(k)) or {}).get("ratio") for k in intervals if paired),
                      cost.get("peak_memory_mib"), row["status"]])
    device = next((r["cost"]["device"] for r in rows if r.get("cost")), "-")
    headers = ["label", "params (M)", "GFLOPs key", "GFLOPs non-key", *(f"GFLOPs avg k={k}" for k in intervals),
               "key ms", "non-key ms", *(f"FPS k={k}" for k in intervals),
               *(f"vs per-frame k={k}" for k in intervals if paired), "peak MiB", "status"]
    kind = next((r["cost"].get("peak_memory") for r in rows if r.get("cost")), None)
    return (tabulate(table, headers=headers, tablefmt="github", floatfmt=".2f") + f"\n\nLatency and FPS on {device}"
            + (f"; peak MiB: a key and a non-key step's {kind}." if kind else "."))


def recipe_table(recipes: list, sources: bool) -> str:
    """Recipes a line each; with ``sources`` each one's values with where each comes from."""
    table = [[r.method + (f" ({r.segmentor})" if r.segmentor else ""), r.dataset, r.optimizer, f"{r.learning_rate:g}",
              f"{r.weight_decay:g}", r.iterations, r.batch_size, r.devices,
              "x".join(map(str, r.crop_size)) if r.crop_size else "-", _lr_schedule(r)] for r in recipes]
    lines = [tabulate(table, headers=["method", "dataset", "optimizer", "lr", "weight decay", "iterations", "batch",
                                      "devices", "crop", "schedule"], tablefmt="github")]
    for recipe in recipes if sources else []:
        lines.append(f"\n{recipe.method} on {recipe.dataset}" + (f" ({recipe.segmentor})" if recipe.segmentor else ""))
        lines += [f"  {name}: {_plain(getattr(recipe, name))}  [{source}]" for name, source in recipe.sources.items()]
    return "\n".join(lines)


def _lr_schedule(recipe) -> str:
    schedule, warmup = recipe.lr_schedule, recipe.warmup
    text = f"poly {schedule['power']:g}" if schedule["type"] == "poly" else schedule["type"]
    return text + (f", {warmup['iterations']} warm-up" if warmup.get("iterations") else "")


def _plain(value: object) -> str:
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    return str(value)


def method_table(methods: dict[str, type], verbose: bool) -> str:
    """The registry in 80 columns (defaults marked with *); every preset and variant with ``verbose``."""
    methods = dict(sorted(methods.items()))
    if verbose:
        table = [[name, (cls.__doc__ or "").strip().splitlines()[0],
                  ", ".join(p + ("*" if p == cls.default_preset else "") for p in cls.presets),
                  ", ".join(v + ("*" if i == 0 and len(cls.variants) > 1 else "") for i, v in enumerate(cls.variants)),
                  _sweep_axis(cls)] for name, cls in methods.items()]
        return tabulate(table, headers=["method", "what", "presets", "variants", "sweep axis"], tablefmt="github")
    table = [[name, cls.default_preset + "*" + (f" +{len(cls.presets) - 1}" if len(cls.presets) > 1 else ""),
              cls.variants[0] + ("*" + f" +{len(cls.variants) - 1}" if len(cls.variants) > 1 else ""),
              _sweep_axis(cls)] for name, cls in methods.items()]
    return (tabulate(table, headers=["method", "presets", "variants", "sweeps"], tablefmt="simple")
            + "\n\n* default; +N: more (bench list --verbose lists them)")


def _sweep_axis(cls: type) -> str:
    return "memory M" if cls.sweep_axis == "memory_frames" else "interval k" if cls.uses_key_frames else "-"
