"""RAFT against princeton-vl/RAFT's code and torchvision's port, both checkpoint layouts, large and small.

``tests/golden/raft/<layout>_<size>/`` was made by ``scripts/golden_raft.py`` (see its docstring): the
official models on golden weights that :func:`golden_state` rebuilds from a seed (``keys.json`` holds
their names and shapes), two 128 x 128 frames, five iterations, float64.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from vssbench.methods.raft import RAFT, InputPadder, RAFTWeightsError, load_raft

GOLDEN = Path(__file__).parent / "golden" / "raft"
TOLERANCE = 1e-10
_spec = importlib.util.spec_from_file_location("golden_raft", Path(__file__).parents[1] / "scripts" / "golden_raft.py")
golden_raft = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_raft)
CASES = sorted(golden_raft.SEED)


def _checkpoint(case: str, folder: Path) -> tuple[Path, dict]:
    """The golden weights of ``case`` written as their code saves them (princeton-vl's under DataParallel's
    ``module.``), and the references."""
    keys = json.loads((GOLDEN / case / "keys.json").read_text())
    state = golden_raft.golden_state(keys, golden_raft.SEED[case])
    if case.startswith("princeton"):
        state = {f"module.{k}": v for k, v in state.items()}
    path = folder / f"{case}.pth"
    torch.save(state, path)
    return path, torch.load(GOLDEN / case / "reference.pt", weights_only=True)


@pytest.mark.parametrize("case", CASES)
def test_both_layouts_load_and_compute_what_the_official_code_computes(case, tmp_path):
    path, reference = _checkpoint(case, tmp_path)
    model, weights = load_raft(path)
    assert (weights.layout, weights.size) == (("princeton-vl" if case.startswith("princeton") else "torchvision"),
                                              case.split("_")[1])
    model = model.double()
    with torch.no_grad():
        low, up = model(reference["image1"].double(), reference["image2"].double(), iters=reference["iters"])
    assert (up - reference["flow_up"]).abs().max() < TOLERANCE
    if "flow_low" in reference:
        assert (low - reference["flow_low"]).abs().max() < TOLERANCE
    assert reference["flow_up"].abs().max() > 10  # a flow worth comparing, not a near-zero field


@pytest.mark.parametrize("name", ["fnet.layer2.0.conv1.weight", "cnet.norm1.running_var",
                                  "update_block.gru.convq1.weight", "update_block.mask.2.bias",
                                  "update_block.encoder.convf1.weight"])
def test_a_perturbed_weight_is_seen(name, tmp_path):
    path, reference = _checkpoint("princeton_large", tmp_path)
    model = load_raft(path)[0].double()
    tensor = dict(model.state_dict(keep_vars=True))[name]
    with torch.no_grad():  # noise, not a scale: instance norm after a conv cancels a scale of its weight
        tensor.add_(0.01 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(0), dtype=tensor.dtype))
        _, up = model(reference["image1"].double(), reference["image2"].double(), iters=reference["iters"])
    assert (up - reference["flow_up"]).abs().max() > 1e3 * TOLERANCE


def test_sizes_have_the_published_parameter_counts():
    """torchvision's weight metadata: num_params 5257536 (raft_large) and 990162 (raft_small)."""
    assert sum(p.numel() for p in RAFT("large").parameters()) == 5_257_536
    assert sum(p.numel() for p in RAFT("small").parameters()) == 990_162


def test_what_is_not_raft_is_refused_naming_the_file(tmp_path):
    other = tmp_path / "segformer.pth"
    torch.save({"backbone.conv.weight": torch.zeros(1)}, other)
    with pytest.raises(RAFTWeightsError, match="segformer.pth: neither princeton-vl's RAFT"):
        load_raft(other)
    with pytest.raises(RAFTWeightsError, match="no such file"):
        load_raft(tmp_path / "missing.pth")


def test_the_padder_pads_evenly_to_multiples_of_eight_and_back():
    padder = InputPadder(477, 853)
    image = torch.arange(477 * 853, dtype=torch.float64).reshape(1, 1, 477, 853)
    padded = padder(image)
    assert padded.shape[-2:] == (480, 856) and padder.pad == [1, 2, 1, 2]
    assert torch.equal(padder.unpad(padded), image)
