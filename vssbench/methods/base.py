"""The uniform video-method interface, the key-frame schedule and the method registry.

Every method is a ``VideoMethod``: the runner calls ``reset()`` at each new video and
``step(frame, is_key)`` on each frame, and gets per-pixel class scores back. A method is
named on the command line as ``METHOD[:PRESET]`` (``perframe:segformer-b0``,
``mpvss:r50``) and optionally a variant (an ablation of the paper, ``--variant``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from vssbench.limits import check_class_count

# Norm layers (batch, instance, group, layer and local-response norms: the types of Mask2Former's
# build_optimizer): their statistics freeze with their affine parameters.
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


class SpecError(ValueError):
    """An unknown method, preset or variant; the message lists the valid ones."""


@dataclass(frozen=True)
class KeySchedule:
    """Fixed-interval key frames: frame t of video v is a key frame iff (t - offset_v) % interval == 0.

    ``interval = 1`` runs the segmentor on every frame. ``offset`` shifts the key frames,
    used by the Cityscapes protocol to place the labelled frame anywhere in a key interval;
    with ``rotate`` the offset of the v-th video of the dataset is (offset + v) % interval, as
    DCFM's official test moves its first key frame one frame later for each video. ``cycles`` runs
    every video that many times in a row, each run scored (DCFM's ``cicle``): the c-th run of the v-th
    video counts as video v * cycles + c, so under ``rotate`` each run starts one frame later.
    """

    interval: int = 1
    offset: int = 0
    rotate: bool = False
    cycles: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"key-frame interval must be a positive integer, got {self.interval!r}")
        if not 0 <= self.offset < self.interval:
            raise ValueError(f"key-frame offset must be in 0..{self.interval - 1}, got {self.offset}")
        if not isinstance(self.cycles, int) or self.cycles < 1:
            raise ValueError(f"cycles must be a positive integer, got {self.cycles!r}")

    def is_key(self, t: int, video: int = 0) -> bool:
        offset = (self.offset + video) % self.interval if self.rotate else self.offset
        return (t - offset) % self.interval == 0

    def record(self) -> dict:
        """The row's ``schedule`` object (``rotate_offset`` and ``cycles`` appear only when set, so rows
        without them keep their hash)."""
        record = {"type": "interval", "key_interval": self.interval, "offset": self.offset}
        if self.rotate:
            record["rotate_offset"] = True
        if self.cycles > 1:
            record["cycles"] = self.cycles
        return record


class VideoMethod(nn.Module, abc.ABC):
    """A video semantic segmentation method behind one interface (docs/your-method.md).

    What trains is decided by ``requires_grad`` alone: a method freezes what its own training stage
    keeps fixed in its constructor, a recipe's ``trainable`` rules may change that, and
    :meth:`train` keeps whatever ends up frozen in evaluation mode (so a frozen batch norm keeps its
    statistics) and everything that learns in training mode.
    """

    name: ClassVar[str]
    presets: ClassVar[dict[str, dict]]  # preset name -> constructor keyword arguments
    default_preset: ClassVar[str]
    variants: ClassVar[tuple[str, ...]] = ("default",)
    uses_key_frames: ClassVar[bool] = True  # False: the key-frame interval does not change the output
    # What a sweep varies: the key-frame interval (--intervals), or "memory_frames" for methods that
    # attend to a memory of previous frames instead of using key frames (STT; --memory).
    sweep_axis: ClassVar[str] = "key_interval"
    has_own_training_stage: ClassVar[bool] = True  # False: training it is training its segmentor
    # A method of another package with a training stage ships its recipes (vssbench/recipes' format) here.
    recipe_path: ClassVar[str | None] = None
    # Tensors a source may hold that this method lacks on purpose (a regular expression on the key relative
    # to the method -> why): dropped with that reason when loaded, where any other extra tensor is an error.
    unused_weights: ClassVar[dict[str, str]] = {}

    def __init__(self, preset: str, variant: str, num_classes: int) -> None:
        super().__init__()
        self.preset = preset
        self.variant = variant
        self.num_classes = num_classes

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.preset}"

    @property
    def checkpoint_variant(self) -> str:
        """The variant whose trained weights this one uses (variants that differ only at
        inference share them)."""
        return self.variant

    @property
    def segmentor_preset(self) -> str | None:
        """The image segmentor preset this method builds on, whose weights it can share."""
        return None

    @abc.abstractmethod
    def reset(self) -> None:
        """Start a new video: drop all temporal state."""

    @abc.abstractmethod
    def step(self, frame: torch.Tensor, is_key: bool) -> torch.Tensor:
        """(B, 3, H, W) normalised frame -> (B, C, H, W) class scores for that frame."""

    @abc.abstractmethod
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The method's training objective on a batch of ``frames`` (B, T, 3, H, W) and
        ``labels`` (B, T, H, W); returns its named terms, unweighted: the training loop weights
        each by the recipe's ``loss_weights`` (a term without a weight is an error)."""

    def loss_terms(self) -> tuple[str, ...] | None:
        """The names of the terms this method's ``loss`` returns (None: whatever the first batch gives;
        the training loop then checks those)."""
        return None

    def dropped_loss_terms(self) -> dict[str, str]:
        """Terms its recipes weight that this variant does not compute, each with the reason (TFC's
        ablations without a similarity map have no consistency term); recorded, never applied."""
        return {}

    def train(self, mode: bool = True) -> "VideoMethod":
        """Training mode for what learns; evaluation mode for every module whose parameters are all
        frozen, and for every norm layer whose own affine parameters are (its statistics stay as
        trained, as DFF's fixed batch norms and every frozen segmentor need)."""
        super().train(mode)
        if mode:
            for module in self.modules():
                own = list(module.parameters(recurse=False))
                every = own if isinstance(module, NORM_TYPES) else list(module.parameters())
                if every and not any(p.requires_grad for p in every):
                    module.eval()
        return self

    @property
    def key_lookahead(self) -> bool:
        """Whether this method reads the next key frame before the frames that precede it (DCFM's official
        test): the runner then steps each key frame before the non-key frames between it and the last key
        frame, and scores every frame in display order all the same."""
        return False

    def key_schedule(self, interval: int) -> KeySchedule:
        """The key frames this method's protocol uses at ``interval`` (the same frames for every video unless
        the protocol says otherwise)."""
        return KeySchedule(interval)

    def no_next_key(self) -> None:
        """For a ``key_lookahead`` method: the non-key frames stepped next have no key frame after them (they
        end the video)."""

    def cost_paths(self, frame: torch.Tensor) -> dict[str, Callable[[], torch.Tensor]]:
        """Callables that run one key and one non-key step on ``frame``, for FLOP counting.

        A key step runs first so that the non-key path finds the temporal state it needs;
        a method whose paths are not plain ``step`` calls overrides this.
        """
        self.reset()
        self.step(frame, True)
        return {"key": lambda: self.step(frame, True), "nonkey": lambda: self.step(frame, False)}

    def cost_settings(self) -> dict:
        """Settings the cost of this method depends on beyond its preset, recorded in the cost block."""
        return {}

    def component_methods(self) -> dict[str, VideoMethod]:
        """Whole video methods this one is built from (Accel's DFF reference branch and
        per-frame update branch): trained, or loaded, before this method's own stage."""
        return {}

    def weight_components(self) -> dict[str, str]:
        """The parts weights can be loaded into one at a time (``--init COMPONENT=PATH``), by module path:
        ``segmentor`` and, for methods with one, ``flow`` (a FlowNetS or motion encoder); a segmentor's
        ImageNet ``backbone`` is found through it (:mod:`vssbench.methods.weights`)."""
        return {"segmentor": "segmentor"} if isinstance(getattr(self, "segmentor", None), nn.Module) else {}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """What this method's training stage updates: the optimizer is built over exactly these. By
        default every parameter with ``requires_grad`` (after the recipe's ``trainable`` rules)."""
        return (p for p in self.parameters() if p.requires_grad)


METHODS: dict[str, type[VideoMethod]] = {}
PLUGIN_GROUP = "vssbench.methods"  # the entry-point group of methods from other packages


def register_method(name: str) -> Callable[[type[VideoMethod]], type[VideoMethod]]:
    """Class decorator adding a VideoMethod to the registry under ``name`` (part of the public API:
    docs/your-method.md)."""

    def decorator(cls: type[VideoMethod]) -> type[VideoMethod]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name].__module__} and {cls.__module__})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return decorator


def load_plugins() -> list[str]:
    """Import every installed package's methods (entry points of :data:`PLUGIN_GROUP`); returns their names.
    The built-in methods are registered when :mod:`vssbench.methods` is imported."""
    from importlib.metadata import entry_points

    loaded = []
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()
        except Exception as error:  # noqa: BLE001 - a broken plugin is named, not a traceback
            raise SpecError(f"the {PLUGIN_GROUP} entry point {entry.name!r} ({entry.value}) failed to load: "
                            f"{type(error).__name__}: {error}") from error
        loaded.append(entry.name)
    return loaded


def load_plugin_module(module: str) -> None:
    """``--plugin MODULE``: import a module that registers methods, without installing it as a package."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as error:
        raise SpecError(f"--plugin {module}: cannot import it ({error}); expected an importable module that "
                        "registers methods with @register_method") from error


def registered_methods() -> dict[str, type[VideoMethod]]:
    """Every registered method by name: the built-ins and every installed plugin."""
    load_plugins()
    return dict(METHODS)


def parse_spec(spec: str) -> tuple[str, str]:
    """``METHOD[:PRESET]`` -> (method, preset), checking both against the registry."""
    method_name, _, preset = spec.strip().partition(":")
    if method_name not in METHODS:
        load_plugins()
    if method_name not in METHODS:
        raise SpecError(f"unknown method {method_name!r} in {spec!r}; valid methods: {', '.join(sorted(METHODS))}")
    cls = METHODS[method_name]
    preset = preset or cls.default_preset
    if preset not in cls.presets:
        raise SpecError(
            f"unknown preset {preset!r} for method {method_name!r}; valid presets: {', '.join(cls.presets)}"
        )
    return method_name, preset


def build_method(spec: str, num_classes: int, variant: str | None = None) -> VideoMethod:
    """Instantiate a method from ``METHOD[:PRESET]`` and an optional variant (random init)."""
    method_name, preset = parse_spec(spec)
    cls = METHODS[method_name]
    variant = variant or cls.variants[0]
    if variant not in cls.variants:
        raise SpecError(f"unknown variant {variant!r} for method {method_name!r}; valid variants: {', '.join(cls.variants)}")
    check_class_count(num_classes, f"{spec} for {num_classes!r} classes", SpecError)  # before any layer is built
    return cls(preset=preset, variant=variant, num_classes=num_classes, **cls.presets[preset])
