"""Make tests/golden/raft/ with princeton-vl/RAFT's own code and torchvision's port of it.

    python scripts/golden_raft.py PATH/TO/RAFT PATH/TO/TORCHVISION-SOURCE tests/golden

Run in a scratch environment with torch and numpy, never in vssbench's. ``PATH/TO/RAFT`` is a checkout
of princeton-vl/RAFT (its ``core/`` is imported as the demo imports it); ``PATH/TO/TORCHVISION-SOURCE``
holds torchvision's Python files (a checkout of pytorch/vision, or the ``.py`` files of a torchvision
wheel: torchvision's compiled part does not load beside a CPU torch of another version, so its
packages are made importable file by file and the modules ``raft.py`` imports for its weight enums
and logging are loaded from the same source, ``torchvision.transforms._presets`` stubbed since only
its ``OpticalFlow`` name is read; SciPy, which princeton-vl's ``core/utils/utils.py`` imports for a
function not called here, is stubbed where it is not installed). None of either code is changed or
copied.

For each layout (``princeton``: ``core/raft.py``'s ``RAFT(args)`` with ``args.small`` False / True;
``torchvision``: ``raft_large()`` / ``raft_small()``) and size it writes ``<layout>_<size>/``:

* ``keys.json``: the state dict's names and shapes in order, each a name of its own or the name of the
  tensor it shares (a strided block's norm is registered twice in princeton-vl's code). The values are
  not stored: :func:`golden_state` draws them from a seeded NumPy ``RandomState`` (whose streams NumPy
  keeps stable) in that order, rounded to float32, so that a test rebuilds the same file;
* ``reference.pt``: the two input frames (128 x 128, uint8; computed on as float64; torchvision's model
  gets them as its ``OpticalFlow`` preset gives them, scaled to [0, 1] and normalised with mean and
  std 0.5), the iteration count,
  and the model's flow at 1/8 and at full resolution (princeton-vl's ``test_mode`` outputs; torchvision
  returns the upsampled flows of every iteration, of which the last is kept), computed in float64:
  the default dtype is float64 and ``Tensor.float`` keeps float64, so the casts both codes make to
  float32 keep every digit here.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from golden_cffm import _package  # noqa: E402  (a package module for a folder, its __init__ skipped)

SEED = {"princeton_large": 1, "princeton_small": 2, "torchvision_large": 3, "torchvision_small": 4}
SIZE, ITERATIONS = (128, 128), 5


def golden_state(keys: list[dict], seed: int) -> dict[str, torch.Tensor]:
    """The golden weights of ``keys`` (keys.json): batch-norm statistics uniform (means in +-0.2, variances
    in 0.5..1.5), norm scales 1 + 0.1 N(0, 1), biases 0.1 N(0, 1), conv weights N(0, 1 / fan-in); float64
    values that float32 holds exactly."""
    rng = np.random.RandomState(seed)
    state: dict[str, torch.Tensor] = {}
    for entry in keys:
        name, shape = entry["key"], entry["shape"]
        if entry["same_as"]:
            state[name] = state[entry["same_as"]]
            continue
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0)
            continue
        count = int(np.prod(shape))
        if name.endswith("running_var"):
            values = rng.uniform(0.5, 1.5, count)
        elif name.endswith("running_mean"):
            values = rng.uniform(-0.2, 0.2, count)
        elif len(shape) == 1 and name.endswith("weight"):
            values = 1 + 0.1 * rng.standard_normal(count)
        elif len(shape) == 1:
            values = 0.1 * rng.standard_normal(count)
        else:
            values = rng.standard_normal(count) / np.sqrt(np.prod(shape[1:]))
        state[name] = torch.from_numpy(values.astype(np.float32).astype(np.float64).reshape(shape))
    return state


def golden_frames(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two related frames with values 0..255: smooth random content, the second shifted by (3, 2) pixels and
    noised, so that the flow has something to find."""
    rng = np.random.RandomState(seed)
    base = rng.uniform(0, 255, (3, SIZE[0] // 8 + 2, SIZE[1] // 8 + 2))
    big = torch.nn.functional.interpolate(torch.from_numpy(base)[None], scale_factor=8, mode="bilinear",
                                          align_corners=False)[0]
    first = big[:, 4:4 + SIZE[0], 4:4 + SIZE[1]]
    second = big[:, 2:2 + SIZE[0], 1:1 + SIZE[1]] + torch.from_numpy(rng.uniform(-8, 8, (3, *SIZE)))
    return first.clamp(0, 255).round()[None], second.clamp(0, 255).round()[None]


def keys_of(model: torch.nn.Module) -> list[dict]:
    """The state dict's names and shapes, each shared tensor named after its first name."""
    seen: dict[int, str] = {}
    out = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        first = seen.setdefault(id(tensor), name)
        out.append({"key": name, "shape": list(tensor.shape), "same_as": first if first != name else None})
    return out


def _load(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def princeton_models(raft: Path) -> dict[str, torch.nn.Module]:
    sys.path.insert(0, str(raft / "core"))
    scipy = types.ModuleType("scipy")  # core/utils/utils.py imports it for forward_interpolate, never called here
    scipy.interpolate = None
    sys.modules.setdefault("scipy", scipy)
    from raft import RAFT  # core/raft.py, as demo.py imports it

    def build(small: bool) -> torch.nn.Module:
        return RAFT(argparse.Namespace(small=small, mixed_precision=False, alternate_corr=False, dropout=0))

    return {"large": build(False), "small": build(True)}


def torchvision_models(source: Path) -> dict[str, torch.nn.Module]:
    root = source / "torchvision"
    for package in ("torchvision", "torchvision.models", "torchvision.ops", "torchvision.transforms",
                    "torchvision.models.optical_flow"):
        _package(package, root.joinpath(*package.split(".")[1:]))
    _load("torchvision._utils", root / "_utils.py")
    _load("torchvision._internally_replaced_utils", root / "_internally_replaced_utils.py")
    _load("torchvision.utils", root / "utils.py")
    sys.modules["torchvision.ops"].Conv2dNormActivation = _load("torchvision.ops.misc",
                                                                root / "ops" / "misc.py").Conv2dNormActivation
    presets = types.ModuleType("torchvision.transforms._presets")
    presets.OpticalFlow = None  # a weight enum's transforms field, never called
    sys.modules["torchvision.transforms._presets"] = presets
    _load("torchvision.models._api", root / "models" / "_api.py")
    _load("torchvision.models._utils", root / "models" / "_utils.py")
    _load("torchvision.models.optical_flow._utils", root / "models" / "optical_flow" / "_utils.py")
    raft = _load("torchvision.models.optical_flow.raft", root / "models" / "optical_flow" / "raft.py")
    return {"large": raft.raft_large(), "small": raft.raft_small()}


def flows(layout: str, model: torch.nn.Module, image1: torch.Tensor, image2: torch.Tensor) -> tuple:
    with torch.no_grad():
        if layout == "princeton":
            return model(image1, image2, iters=ITERATIONS, test_mode=True)
        # torchvision's model takes frames its OpticalFlow preset made: to [0, 1], then normalised with mean
        # and std 0.5, the rescaling princeton-vl's forward does itself
        upsampled = model((image1 / 255 - 0.5) / 0.5, (image2 / 255 - 0.5) / 0.5, num_flow_updates=ITERATIONS)
        return None, upsampled[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raft", type=Path, help="a checkout of princeton-vl/RAFT")
    parser.add_argument("torchvision", type=Path, help="torchvision's Python source (a checkout or a wheel's files)")
    parser.add_argument("out", type=Path, help="where to write raft/")
    args = parser.parse_args()
    torch.set_default_dtype(torch.float64)
    torch.Tensor.float = lambda self, *a, **k: self.to(torch.float64)  # the codes' float32 casts keep float64
    models = {"princeton": princeton_models(args.raft), "torchvision": torchvision_models(args.torchvision)}
    for layout, sized in models.items():
        for size, model in sized.items():
            case = f"{layout}_{size}"
            keys = keys_of(model)
            state = golden_state(keys, SEED[case])
            model.load_state_dict(state)
            model.eval()
            image1, image2 = golden_frames(SEED[case] + 100)
            low, up = flows(layout, model, image1, image2)
            folder = args.out / "raft" / case
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "keys.json").write_text(json.dumps(keys, indent=0) + "\n")
            reference = {"image1": image1.to(torch.uint8), "image2": image2.to(torch.uint8), "iters": ITERATIONS,
                         "flow_up": up}
            if low is not None:
                reference["flow_low"] = low
            torch.save(reference, folder / "reference.pt")
            print(case, len(keys), "tensors", sum(int(np.prod(k["shape"])) for k in keys if not k["same_as"]),
                  "values; |flow| max", float(up.abs().max()))


if __name__ == "__main__":
    main()
