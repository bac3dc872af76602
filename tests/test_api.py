"""pipeline.api: the Python entry returns typed results and raises the project's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import api
from pipeline.context import StageLog
from pipeline.errors import BundleError, ConfigError, VtEdgeError


def test_build_verify_report_and_compare_from_python(tiny_project: Path, monkeypatch):
    monkeypatch.chdir(tiny_project)
    stages, news = [], []
    outcome = api.build(
        "cpu", tiny_project / "pipeline.toml", log=StageLog(on_stage=stages.append, on_message=news.append)
    )
    assert outcome.bundle.is_dir() and outcome.passed == (not outcome.gate_failures)
    assert {"export", "precision", "validate"} <= {entry.stage for entry in stages}
    assert outcome.report["results"] and outcome.report["gate"]["failures"] == outcome.gate_failures

    manifest = api.verify(outcome.bundle)
    assert manifest.name == outcome.bundle.name and "report/report.json" in manifest.files

    written = api.report(outcome.bundle)
    assert written and all(path.is_file() and outcome.bundle in path.parents for path in written)
    assert api.verify(outcome.bundle).files.keys() == manifest.files.keys()  # the renderings stay listed

    comparison = api.compare(
        outcome.bundle, outcome.bundle / "report" / "report.json", output=tiny_project / "compare.md"
    )
    assert comparison.rows and not comparison.regressions
    assert (tiny_project / "compare.md").read_text().strip()


def test_graphs_gives_the_precision_graphs_without_a_bundle(tiny_project: Path, monkeypatch):
    monkeypatch.chdir(tiny_project)
    graphs = api.graphs("cpu", tiny_project / "pipeline.toml")
    assert {"fp32", "int8"} <= set(graphs.models) and all(path.is_file() for path in graphs.models.values())
    assert len(graphs.data.calib.labels) and graphs.model.module is not None
    assert not (tiny_project / "engines").exists()  # nothing beyond the host stages


def test_the_api_raises_the_projects_errors(tiny_project: Path, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tiny_project)
    with pytest.raises(ConfigError, match="nowhere"):
        api.build("nowhere", tiny_project / "pipeline.toml")
    with pytest.raises(BundleError):
        api.verify(tmp_path / "no-bundle")
    with pytest.raises(VtEdgeError):
        api.compare(tmp_path / "a.json", tmp_path / "b.json")
    with pytest.raises(ConfigError, match="slowdown"):
        api.compare(tmp_path / "a.json", tmp_path / "b.json", max_slowdown=float("nan"))
