"""Training recipes as data: one per (method, dataset), every value with the source it was read from.

The YAML files beside this module hold them, one file per method (``perframe.yaml`` one per segmentor
family): for each dataset (``vspw``, ``cityscapes`` where the paper trains there, ``synthetic``) each
field is ``{value, source}``, the source naming the paper's section or table or the official config
file and key, or saying that no source states the value and why it was chosen. An entry may start from
another (``base: vspw``, ``base: dff/cityscapes``, ``base: segformer/synthetic``) and name only what
differs. :func:`load` gives the :class:`Recipe` of a method on a dataset; ``bench recipes`` prints them.

The ``synthetic`` recipes are vssbench's own schedules, sized for a CPU; on the synthetic set ``--recipe
paper`` uses the ``vspw`` recipe, which the synthetic set's layout mimics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

import yaml

PAPER_DATASETS = ("vspw", "cityscapes")
# Every recipe field, with what it holds; each must be present (through ``base`` or itself) with a source.
FIELDS = {
    "optimizer": "adamw or sgd",
    "learning_rate": "the base rate",
    "weight_decay": "decoupled (AdamW) or L2 (SGD) weight decay",
    "param_groups": "the source framework's rule (vssbench.benchmark.training.parameter_groups): {style: single}, "
                    "{style: mmcv, custom_keys: {KEY: {lr_mult, decay_mult}}} (longest key in the name wins) or "
                    "{style: detectron2, backbone, backbone_multiplier, weight_decay_norm, weight_decay_embed, "
                    "no_decay_names}",
    "lr_schedule": "{type: poly, power, min_lr} or {type: constant}",
    "warmup": "{iterations, ratio, type: linear | constant}: the rate starts at ratio x the rate",
    "iterations": "optimiser steps",
    "batch_size": "the global batch",
    "devices": "the paper's device count: batch_size / devices frames go through the network at a time",
    "crop_size": "(H, W) of the augmentation's random crop, or null for none (checked against the pipeline)",
    "augmentation": "the pipeline (vssbench.datasets.augment)",
    "sampling": "{frames: 1} single frames, {frames: 2, min_gap, max_gap} (key, current) pairs (either_side: true: "
                "the key as likely after the current frame as before), {frames: T} clips "
                "of consecutive frames, {frames: T, offsets: [T-1 negative offsets]} a target and its references",
    "loss_weights": "{TERM: weight} for every term the method's loss() returns (training multiplies each by it)",
    "grad_clip": "{max_norm, norm_type} or null",
    "amp": "whether the paper trained with mixed precision: fp16 on CUDA unless bench train --amp overrides it",
    "init": "{COMPONENT: the weights the paper started it from}: bench train needs --init COMPONENT=PATH for each, "
            "or --random-init",
    "trainable": "rules {match | module_type, train} deciding which parameters learn, or null for the method's own",
}
OPTIONAL = {"betas": "AdamW's betas", "momentum": "SGD's momentum"}


class RecipeError(ValueError):
    """No recipe for a method and dataset, or a recipe file that is not well formed."""


@dataclass(frozen=True)
class Recipe:
    """How ``bench train`` trains one method on one dataset (fields: :data:`FIELDS`)."""

    method: str
    dataset: str
    segmentor: str | None  # the segmentor family, for per-frame recipes
    optimizer: str
    learning_rate: float
    weight_decay: float
    param_groups: dict
    lr_schedule: dict
    warmup: dict
    iterations: int
    batch_size: int
    devices: int
    crop_size: tuple[int, int] | None
    augmentation: tuple[dict, ...]
    sampling: dict
    loss_weights: dict
    grad_clip: dict | None
    amp: bool
    init: dict
    trainable: tuple[dict, ...] | None
    betas: tuple[float, float] | None = None
    momentum: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    micro_batch_size: int | None = None  # frames per forward pass; None: batch_size / devices

    @property
    def name(self) -> str:
        return "synthetic" if self.dataset == "synthetic" else "paper"

    @property
    def micro_batch(self) -> int:
        """Samples per forward pass: the paper's per-device batch unless overridden."""
        return self.micro_batch_size or max(1, self.batch_size // self.devices)

    @property
    def frames_per_sample(self) -> int:
        return int(self.sampling.get("frames", 1))

    def with_overrides(self, iterations: int | None = None, batch_size: int | None = None,
                       crop_size: tuple[int, int] | None = None, micro_batch: int | None = None) -> Recipe:
        """The recipe with some values replaced (``bench train --iters/--batch/--crop/--micro-batch``); their
        sources say so."""
        changes: dict = {}
        sources = dict(self.sources)
        if iterations is not None:
            changes["iterations"], sources["iterations"] = iterations, "overridden (--iters)"
        if batch_size is not None:
            changes["batch_size"], sources["batch_size"] = batch_size, "overridden (--batch)"
        if micro_batch is not None:
            changes["micro_batch_size"] = micro_batch
        if crop_size is not None:
            crop = tuple(crop_size)
            steps = tuple({**step, "size": list(crop)} if step["type"] in ("random_crop", "pad") else step
                          for step in self.augmentation)
            if not any(step["type"] == "random_crop" for step in steps):
                steps = steps + ({"type": "random_crop", "size": list(crop), "cat_max_ratio": 1.0},
                                 {"type": "pad", "size": list(crop)})
            changes.update(crop_size=crop, augmentation=steps)
            sources["crop_size"] = sources["augmentation"] = "overridden (--crop)"
        return dataclasses.replace(self, **changes, sources=sources)

    def as_json(self) -> dict:
        """The recipe as ``bench recipes --json`` prints it."""
        out = {"method": self.method, "dataset": self.dataset, "recipe": self.name}
        if self.segmentor:
            out["segmentor"] = self.segmentor
        out.update({name: _plain(getattr(self, name)) for name in (*FIELDS, *OPTIONAL)})
        out["warmup_iterations"] = int(self.warmup.get("iterations", 0))
        out["micro_batch"] = self.micro_batch
        out["sources"] = dict(self.sources)
        return out


def _plain(value: object) -> object:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_PLUGIN_FILES: dict[str, str] = {}  # method -> recipe file of a method from another package


@lru_cache(maxsize=None)
def _file(method: str) -> dict:
    if method in _PLUGIN_FILES:
        with open(_PLUGIN_FILES[method]) as handle:
            return yaml.safe_load(handle)
    resource = resources.files("vssbench.recipes").joinpath(f"{method}.yaml")
    if not resource.is_file():
        raise RecipeError(f"no recipes for method {method!r} (no vssbench/recipes/{method}.yaml)")
    return yaml.safe_load(resource.read_text())


def recipe_methods() -> list[str]:
    """Methods that have a recipe file."""
    return sorted(p.name[: -len(".yaml")] for p in resources.files("vssbench.recipes").iterdir()
                  if p.name.endswith(".yaml"))


def _entries(method: str, family: str | None) -> dict:
    document = _file(method)
    if family is None:
        return {k: v for k, v in document.items() if k not in ("method", "segmentors")}
    segmentors = document.get("segmentors") or {}
    if family not in segmentors:
        raise RecipeError(f"no {method} recipe for segmentor family {family!r}; families: {', '.join(segmentors)}")
    return segmentors[family]


def _resolve(method: str, family: str | None, dataset: str, seen: tuple = ()) -> dict:
    """The fields of an entry with its ``base`` chain applied, each {value, source}."""
    if (method, family, dataset) in seen:
        raise RecipeError(f"recipe {method}/{family or ''}/{dataset}: its base chain loops")
    entries = _entries(method, family)
    if dataset not in entries:
        raise RecipeError(f"no {method} recipe for {dataset}" + (f" ({family})" if family else "") +
                          f"; it has {', '.join(entries)}")
    entry = dict(entries[dataset])
    base = entry.pop("base", None)
    fields: dict = {}
    if base is not None:
        head, _, tail = base.rpartition("/")
        if not head:
            fields = _resolve(method, family, tail, (*seen, (method, family, dataset)))
        elif family is not None and head in _file(method).get("segmentors", {}):
            fields = _resolve(method, head, tail, (*seen, (method, family, dataset)))
        else:
            fields = _resolve(head, None, tail, (*seen, (method, family, dataset)))
    for name, item in entry.items():
        if name not in FIELDS and name not in OPTIONAL:
            raise RecipeError(f"recipe {method}/{dataset}: unknown field {name!r}; fields: {', '.join(FIELDS)}")
        if not isinstance(item, dict) or set(item) != {"value", "source"} or not item["source"]:
            raise RecipeError(f"recipe {method}/{dataset}: {name} must be {{value, source}} with a source")
        fields[name] = item
    return fields


def load(method: str, dataset: str, segmentor_preset: str | None = None) -> Recipe:
    """The recipe of ``method`` (a registry name; ``copy`` trains as ``perframe``) on ``dataset``; the
    per-frame methods take the recipe of their segmentor's family (``segformer``, ``mask2former``, ...).
    A video method whose file has ``segmentors`` entries takes the one of its segmentor preset where there
    is one (``pspnet-r101``), else of its family (``pspnet``), else its own top-level entries (DCFM: the
    ResNet configs train otherwise than the MiT ones)."""
    from vssbench.datasets.augment import AugmentationError, check_pipeline

    method = "perframe" if method == "copy" else method
    family = segmentor_preset.split("-")[0] if method == "perframe" and segmentor_preset else None
    if method != "perframe" and segmentor_preset:
        listed = _file(method).get("segmentors") or {}
        family = next((name for name in (segmentor_preset, segmentor_preset.split("-")[0]) if name in listed), None)
    dataset = "synthetic" if dataset.startswith("synthetic") else dataset
    fields = _resolve(method, family, dataset)
    missing = [name for name in FIELDS if name not in fields]
    if missing:
        raise RecipeError(f"recipe {method}/{dataset}: missing {', '.join(missing)}")
    values = {name: item["value"] for name, item in fields.items()}
    try:
        check_pipeline(values["augmentation"] or [])
    except AugmentationError as error:
        raise RecipeError(f"recipe {method}/{dataset}: {error}") from None
    # crop_size states the crop the pipeline takes (what `bench recipes` prints): it must be the random crop's.
    crops = [list(step["size"]) for step in values["augmentation"] or () if step["type"] == "random_crop"]
    stated = list(values["crop_size"]) if values["crop_size"] else None
    if crops != ([stated] if stated else []):
        raise RecipeError(f"recipe {method}/{dataset}: crop_size {stated} is not the augmentation's random crop "
                          f"{crops[0] if crops else None}")
    offsets = values["sampling"].get("offsets")
    if offsets is not None and (len(offsets) != values["sampling"].get("frames", 1) - 1
                                or not all(isinstance(o, int) and o < 0 for o in offsets)):
        raise RecipeError(f"recipe {method}/{dataset}: sampling offsets {offsets} must be frames - 1 negative "
                          "integers (the references before the target)")
    return Recipe(
        method=method, dataset=dataset, segmentor=family,
        optimizer=values["optimizer"], learning_rate=float(values["learning_rate"]),
        weight_decay=float(values["weight_decay"]), param_groups=dict(values["param_groups"] or {"style": "single"}),
        lr_schedule=dict(values["lr_schedule"]), warmup=dict(values["warmup"]), iterations=int(values["iterations"]),
        batch_size=int(values["batch_size"]), devices=int(values["devices"]),
        crop_size=tuple(values["crop_size"]) if values["crop_size"] else None,
        augmentation=tuple(values["augmentation"] or ()), sampling=dict(values["sampling"]),
        loss_weights=dict(values["loss_weights"]), grad_clip=values["grad_clip"], amp=bool(values["amp"]),
        init=dict(values["init"] or {}), trainable=tuple(values["trainable"]) if values["trainable"] else None,
        betas=tuple(values["betas"]) if values.get("betas") else None,
        momentum=float(values["momentum"]) if values.get("momentum") is not None else None,
        sources={name: item["source"] for name, item in fields.items()},
    )


def recipe_for(method: object, dataset_name: str, kind: str) -> Recipe:
    """The ``kind`` ("paper" or "synthetic") recipe of a built method for a dataset. A method registered
    from a subclass of one with recipes (a researcher's ablation) takes its parent's."""
    names = [cls.name for cls in type(method).__mro__ if isinstance(getattr(cls, "name", None), str)]
    for cls in type(method).__mro__:  # a plugin's own recipes (VideoMethod.recipe_path)
        if getattr(cls, "recipe_path", None) and isinstance(getattr(cls, "name", None), str):
            _PLUGIN_FILES.setdefault(cls.name, str(cls.recipe_path))
    available = set(recipe_methods()) | set(_PLUGIN_FILES) | {"copy"}
    name = next((n for n in names if n in available), None)
    if name is None:
        raise RecipeError(f"no recipes for {method.spec}: add vssbench/recipes/{method.name}.yaml")
    if kind == "synthetic":
        dataset = "synthetic"
    elif kind == "paper":
        dataset = "vspw" if dataset_name.startswith("synthetic") else dataset_name
    else:
        raise RecipeError(f"unknown recipe {kind!r}; expected paper or synthetic")
    return load(name, dataset, getattr(method, "segmentor_preset", None))


def all_recipes() -> list[Recipe]:
    """Every recipe of every method, in file order."""
    out = []
    for method in recipe_methods():
        document = _file(method)
        out.extend(load(method, dataset) for dataset in document if dataset not in ("method", "segmentors"))
        for family, entries in (document.get("segmentors") or {}).items():
            out.extend(load(method, dataset, family) for dataset in entries)
    return out
