import os
import sys
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest

from vssbench.datasets.synthetic import SyntheticSpec, generate

SMALL_SPEC = SyntheticSpec(train_videos=3, val_videos=2, frames=20, height=64, width=96, seed=3)


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory) -> Path:
    """A small synthetic dataset (3 train, 2 val videos of 20 frames, 64x96) shared by the tests."""
    return generate(tmp_path_factory.mktemp("synthetic") / "root", SMALL_SPEC, progress=False)


@pytest.fixture
def vspw_copy(small_synthetic: Path, tmp_path: Path) -> Path:
    """A copy of the small synthetic set at ``tmp_path / "vspw"``: its VSPW layout read as VSPW, and files a
    test may break without touching the shared set."""
    root = tmp_path / "vspw"
    shutil.copytree(small_synthetic, root)
    return root
