"""A researcher's own method, from outside vssbench: the example package, entry points, --plugin."""

import ast
import sys
from pathlib import Path

import pytest

from vssbench.benchmark.results import load_rows
from vssbench.cli import main
from vssbench.methods import base

EXAMPLE = Path(__file__).parents[1] / "examples" / "temporal-smoothing"


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    base.METHODS.pop("smooth", None)
    sys.modules.pop("vssbench_smoothing.method", None)


def test_the_example_runs_and_reports_like_a_built_in(example_on_path, small_synthetic, tmp_path, capsys):
    assert main(["--plugin", "vssbench_smoothing.method", "list"]) == 0
    assert "smooth" in capsys.readouterr().out
    output = tmp_path / "rows.jsonl"
    assert main(["--plugin", "vssbench_smoothing.method", "run", "--methods", "perframe,smooth", "--variants", "all",
                 "--intervals", "1,5", "--data-root", str(small_synthetic), "--max-videos", "1", "--train-iters", "2",
                 "--cache-dir", str(tmp_path / "cache"), "--output", str(output), "--num-workers", "0",
                 "--speed-rounds", "0"]) == 0
    rows = load_rows(output)
    assert {(r["method"], r["variant"]) for r in rows} == {("perframe", "default"), ("smooth", "ema-0.5"),
                                                           ("smooth", "ema-0.8")}
    assert main(["report", str(output), "--out", str(tmp_path / "report"), "--format", "md"]) == 0
    (table,) = (tmp_path / "report").glob("comparison_synthetic*.md")
    assert "| smooth" in table.read_text()
    ablation = (tmp_path / "report" / "ablation_smooth.md").read_text()  # a plug-in's variants, as a built-in's
    assert "smooth: its variants" in ablation and "ema-0.5" in ablation and "ema-0.8" in ablation
    assert (tmp_path / "report" / "ablation_smooth.png").is_file()
    assert main(["check", str(output), "--baseline", str(output)]) == 0
    profile = tmp_path / "profile.jsonl"
    assert main(["--plugin", "vssbench_smoothing.method", "profile", "--methods", "smooth:pspnet-tiny",
                 "--resolution", "32x48", "--intervals", "1", "--no-latency", "--output", str(profile)]) == 0
    (profiled,) = load_rows(profile)
    assert profiled["method"] == "smooth" and profiled["cost"]["gflops_key"] > 0


def test_installed_packages_register_through_entry_points(tmp_path, monkeypatch):
    """What `pip install -e examples/temporal-smoothing` writes, as a dist-info folder on the path."""
    info = tmp_path / "vssbench_temporal_smoothing-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vssbench-temporal-smoothing\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[vssbench.methods]\nsmooth = vssbench_smoothing.method\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    try:
        assert "smooth" in base.load_plugins()
        assert base.parse_spec("smooth:pspnet-tiny") == ("smooth", "pspnet-tiny")
    finally:
        base.METHODS.pop("smooth", None)
        sys.modules.pop("vssbench_smoothing.method", None)


def test_a_plugin_that_does_not_import_is_bad_input(capsys):
    assert main(["--plugin", "no_such_module_here", "list"]) == 2
    assert "--plugin no_such_module_here: cannot import it" in capsys.readouterr().err


def test_the_registry_module_imports_no_method():
    tree = ast.parse((Path(base.__file__)).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not [name for name in imported if name.startswith("vssbench.methods.")]
