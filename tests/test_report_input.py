"""A report.json is input: `report A B` (the regression gate of CI) and `report DIR` read it
through the report model, so a hand-edited, older, newer or hostile report gives one line and
never a verdict; and what the report shows (Markdown, the terminal) stays text."""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from typing import Any, Callable, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tiny_project import ROOT

BUNDLE = "engines/tiny-cpu"
Mutation = Callable[[Dict[str, Any]], None]


@pytest.fixture(scope="module")
def built(tiny_cpu_bundle) -> Dict[str, Any]:
    return json.loads((tiny_cpu_bundle / BUNDLE / "report/report.json").read_text())


def cli(*args: str):
    """`python -m pipeline ARGS` in this process: exit code, stdout, stderr."""
    from pipeline.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def one_error_line(result) -> str:
    """The run printed exactly one line on stderr, `error: ...`, and no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _each_result(key: str, value: Any) -> Mutation:
    def mutate(report: Dict[str, Any]) -> None:
        for result in report["results"]:
            result["accuracy"][key] = value

    return mutate


def _each_p50(value: Any) -> Mutation:
    def mutate(report: Dict[str, Any]) -> None:
        for result in report["results"]:
            for latency in result["latency"]:
                latency["p50_ms"] = value

    return mutate


def _set(key: str, value: Any) -> Mutation:
    return lambda report: report.__setitem__(key, value)


def _drop(key: str) -> Mutation:
    return lambda report: report["results"][1].pop(key)


# (case, how report A is edited, what its one line says after "a.json: ")
BAD_CANDIDATES = [
    ("top-1 NaN", _each_result("top1", math.nan), "key 'results.0.accuracy.top1': Input should be a finite number"),
    (
        "top-1 Infinity",
        _each_result("top1", math.inf),
        "key 'results.0.accuracy.top1': Input should be a finite number",
    ),
    (
        "top-1 above 1",
        _each_result("top1", 1.5),
        "key 'results.0.accuracy.top1': Input should be less than or equal to 1",
    ),
    (
        "agreement negative",
        _each_result("agreement", -0.1),
        "key 'results.0.accuracy.agreement': Input should be greater than or equal to 0",
    ),
    ("top-1 a string", _each_result("top1", "0.9"), "key 'results.0.accuracy.top1': Input should be a valid number"),
    ("p50 NaN", _each_p50(math.nan), "key 'results.0.latency.0.p50_ms': Input should be a finite number"),
    ("p50 -100 ms", _each_p50(-100.0), "key 'results.0.latency.0.p50_ms': Input should be greater than or equal to 0"),
    ("no accuracy", _drop("accuracy"), "key 'results.1.accuracy': Field required"),
    ("no precision", _drop("precision"), "key 'results.1.precision': Field required"),
    ("no latency", _drop("latency"), "key 'results.1.latency': Field required"),
    ("results an object", _set("results", {}), "key 'results': Input should be a valid list"),
    ("results a number", _set("results", 3), "key 'results': Input should be a valid list"),
    ("host a list", _set("host", []), "key 'host': Input should be a valid dictionary"),
    (
        "budget a string",
        _set("budgets", {"int8": {"max_top1_drop": "x", "min_agreement": 0.5}}),
        "key 'budgets.int8.max_top1_drop': Input should be a valid number",
    ),
    (
        "budget NaN",
        _set("budgets", {"int8": {"max_top1_drop": math.nan, "min_agreement": 0.5}}),
        "key 'budgets.int8.max_top1_drop': Input should be a finite number",
    ),
    ("budgets a list", _set("budgets", []), "key 'budgets': Input should be a valid dictionary"),
    (
        "budget with an unknown key",
        _set("budgets", {"int8": {"max_top1_drop": 1.0, "min_agreement": 0.5, "x": 1}}),
        "unknown key 'budgets.int8.x'",
    ),
    (
        "precision twice",
        lambda r: r["results"].append(copy.deepcopy(r["results"][1])),
        "measures precision 'fp32' again",
    ),
]


@pytest.mark.parametrize(
    "mutate,expected", [case[1:] for case in BAD_CANDIDATES], ids=[case[0] for case in BAD_CANDIDATES]
)
def test_a_report_that_cannot_be_a_measurement_is_refused_in_one_line(
    built, tmp_path, tiny_cpu_bundle, mutate, expected
):
    bad = copy.deepcopy(built)
    bad["format_version"] = 1
    mutate(bad)
    (tmp_path / "a.json").write_text(json.dumps(bad))
    good = str(tiny_cpu_bundle / BUNDLE)
    for args in ((str(tmp_path / "a.json"), good), (good, str(tmp_path / "a.json"))):  # as candidate and as baseline
        result = cli("report", *args)
        assert result.exit_code == 1 and "no regression" not in result.stdout
        line = one_error_line(result)
        assert line.startswith(f"error: {tmp_path / 'a.json'}: invalid report: {expected}") or expected in line, line


def test_unreadable_files_give_one_line(built, tmp_path, tiny_cpu_bundle):
    good = str(tiny_cpu_bundle / BUNDLE)
    cases = {
        "nested.json": ("[" * 100_000 + "]" * 100_000, "not a vt-edge report (JSON nested too deeply to read)"),
        "array.json": ("[1, 2]", "not a vt-edge report (its JSON is not an object)"),
        "cut.json": (json.dumps(built)[:500], "not valid JSON"),
        "latin1.bin": ("caf\xe9".encode("latin-1"), "not valid JSON"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        result = cli("report", str(path), good)
        assert result.exit_code == 1 and f"{path}: {expected}" in one_error_line(result), name


def test_format_versions(built, tmp_path, tiny_cpu_bundle):
    """A newer report is refused naming its version; an older one (no format_version) is read when it fits."""
    good = str(tiny_cpu_bundle / BUNDLE)
    assert built["format_version"] == 1
    newer = {**built, "format_version": 2}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    result = cli("report", str(tmp_path / "newer.json"), good)
    assert result.exit_code == 1
    assert "newer.json: report format_version 2; this vt-edge reads format_version 1" in one_error_line(result)
    older = {k: v for k, v in copy.deepcopy(built).items() if k != "format_version"}
    (tmp_path / "older.json").write_text(json.dumps(older))
    result = cli("report", str(tmp_path / "older.json"), good)
    assert result.exit_code == 0 and "no regression" in result.stdout, result.stderr
    del older["results"][0]["accuracy"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    result = cli("report", good, str(tmp_path / "older.json"))
    assert result.exit_code == 1
    assert (
        "older.json: a report without format_version (older vt-edge) that this version cannot read: "
        "key 'results.0.accuracy': Field required"
    ) in one_error_line(result)


def test_non_finite_slowdown_options_are_refused(tiny_cpu_bundle):
    good = str(tiny_cpu_bundle / BUNDLE)
    result = cli("report", good, good, "--max-slowdown", "inf")  # nan: typer refuses it already (min=0)
    assert result.exit_code == 2 and "--max-slowdown and --min-slowdown-ms must be finite numbers" in one_error_line(
        result
    )


def test_report_dir_without_a_usable_report_gives_one_line(built, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("report", str(empty))
    assert result.exit_code == 1
    assert f"{empty}/report/report.json: no report.json in this bundle" in one_error_line(result)
    loose = tmp_path / "loose"  # a report folder without manifest, its report hand-edited
    (loose / "report").mkdir(parents=True)
    (loose / "report/report.json").write_text(json.dumps({**built, "results": "x"}))
    result = cli("report", str(loose))
    assert result.exit_code == 1 and "key 'results': Input should be a valid list" in one_error_line(result)
    assert sorted(p.name for p in (loose / "report").iterdir()) == ["report.json"]  # nothing rendered


def test_bundle_names_reach_the_terminal_as_text(built, tmp_path, tiny_cpu_bundle):
    good = str(tiny_cpu_bundle / BUNDLE)
    for name in ("[/oops]", "\x1b[31mred\x1b[0m", "[bold]x"):
        (tmp_path / "a.json").write_text(json.dumps({**built, "bundle": name}))
        result = cli("report", str(tmp_path / "a.json"), good)
        assert result.exit_code == 0 and result.exception is None, result.output
        assert "\x1b" not in result.output
        shown = name.replace("\x1b", "\\x1b")
        assert shown in " ".join(result.stdout.split()), result.stdout
    path = tmp_path / "b\x1b]0;title\x07.json"
    result = cli("report", str(path), good)
    assert (
        result.exit_code == 1
        and "\x1b" not in result.output
        and "\\x1b]0;title\\x07.json: no report.json here" in one_error_line(result)
    )


# ---------------------------------------------------------------------------------------------
# Markdown: what a renderer of report.md and comparison.md shows


HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</td></tr><tr><td>x",
    "car\rdog",
    "cat\n# heading",
    "a|b",
    "[click](javascript:alert(1))",
    "back\\|slash",
]


def _rendered_html(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return (
        MarkdownIt("commonmark").enable("table").render(markdown)
    )  # raw HTML on, as GitHub's sanitizer is not everyone's


def _table_rows_keep_their_cells(markdown: str) -> None:
    cells = None
    for line in markdown.split("\n"):
        if not line.startswith("|"):
            cells = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line.replace("\\\\", "")))
        assert cells is None or count == cells, line
        cells = count


def _assert_inert(markdown: str) -> None:
    assert "\r" not in markdown and not re.search(r"^#+ heading", markdown, re.MULTILINE)
    page = _rendered_html(markdown)
    assert "<script" not in page and not re.search(r"<img[^>]*onerror", page) and "</td></tr><tr><td>x" not in page
    assert 'href="javascript' not in page and "<h1>heading" not in page
    _table_rows_keep_their_cells(markdown)


def test_report_md_shows_hostile_names_as_text(built, tmp_path):
    from pipeline.stages.report import render_report

    report = copy.deepcopy(built)
    names = report["class_names"]
    for i, name in enumerate(HOSTILE):
        names[i] = name
    report["bundle"] = "<script>x</script>\n# heading"
    report["notes"].append("- Model imported from ONNX (evil\n# heading <img src=x onerror=alert(1)>.onnx), unchanged.")
    fp32 = next(r for r in report["results"] if r["precision"] == "fp32")
    int8 = next(r for r in report["results"] if r["precision"] == "int8")
    int8["predictions"] = copy.deepcopy(fp32["predictions"])
    int8["predictions"]["top1"] = [
        (t + 1) % 10 for t in int8["predictions"]["top1"]
    ]  # every answer changes: every name shows
    render_report(report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    _assert_inert(markdown)
    page = _rendered_html(markdown)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "car\\rdog" in page and "cat\\n# heading" in page
    assert "a|b" in page  # shown, not a cell boundary


def test_comparison_md_shows_hostile_names_as_text(built):
    from pipeline.report.compare import compare_reports
    from pipeline.stages.report import render_comparison

    candidate = {**copy.deepcopy(built), "bundle": HOSTILE[0] + HOSTILE[4]}
    baseline = {
        **copy.deepcopy(built),
        "bundle": HOSTILE[1] + HOSTILE[3],
        "host": {**built["host"], "cpu": HOSTILE[2] + HOSTILE[5]},
    }
    markdown = render_comparison(compare_reports(candidate, baseline))
    _assert_inert(markdown)
    assert "&lt;img src=x onerror=alert(1)&gt;" in _rendered_html(markdown)


# ---------------------------------------------------------------------------------------------
# Schema


def test_the_committed_report_schema_is_the_models_schema(built):
    from pipeline.report.model import schema_text

    assert (ROOT / "docs/report.schema.json").read_text() == schema_text(), (
        'docs/report.schema.json is stale: python -c "from pipeline.report.model import schema_text; '
        "print(schema_text(), end='')\" > docs/report.schema.json"
    )
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(built, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**built, "results": []}, schema)


def test_the_device_finish_report_shape_is_read(built, tmp_path):
    """What validate_on_device writes: the host's rows kept aside, engines measured on a device."""
    from pipeline.stages.report import read_report

    finished = copy.deepcopy(built)
    finished["cpu_proxy_results"] = copy.deepcopy(finished["results"])
    for result in finished["results"]:
        result["runner"] = {"backend": "tensorrt", "device": "Orin", "tensorrt": "10.3"}
    (tmp_path / "report.json").write_text(json.dumps(finished))
    assert read_report(tmp_path / "report.json") == finished


def test_an_overflowed_error_and_an_unbounded_budget_are_recorded_as_finite(built, tmp_path):
    """FP16 outputs that overflow have an infinite error and a NaN cosine, and `max_top1_drop = inf`
    is a valid budget: report.json records them as null and 100 points, so it reads back."""
    from pipeline.stages.report import read_report, render_report

    report = copy.deepcopy(built)
    fp16 = next(r for r in report["results"] if r["precision"] == "fp16")
    fp16["accuracy"].update(max_abs_error=math.inf, cosine_mean=math.nan)
    report["budgets"]["fp16"] = {"max_top1_drop": math.inf, "min_agreement": 0.5}
    render_report(report, tmp_path)
    recorded = read_report(tmp_path / "report.json")
    again = next(r for r in recorded["results"] if r["precision"] == "fp16")
    assert again["accuracy"]["max_abs_error"] is None and again["accuracy"]["cosine_mean"] is None
    assert recorded["budgets"]["fp16"]["max_top1_drop"] == 100.0
    assert math.isinf(fp16["accuracy"]["max_abs_error"])  # the caller's report is left as it was
    assert "| fp16 |" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# Fuzz: malformed report.json files through reading and comparison


def _paths(value: Any, trail: tuple = ()) -> List[tuple]:
    """Every key path of a report (lists: their first two items)."""
    found = [trail]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, trail + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            found += _paths(item, trail + (index,))
    return found


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_non_finite(v) for v in value)
    return False


def _apply(report: Dict[str, Any], path: tuple, action: str, value: Any) -> None:
    if not path:
        return
    *parents, last = path
    holder = report
    for key in parents:
        holder = holder[key]
    if action == "delete":
        del holder[last]
    elif action == "negate" and isinstance(holder[last], (int, float)) and not isinstance(holder[last], bool):
        holder[last] = -holder[last] - 1
    else:
        holder[last] = value


ODD_NUMBERS = [
    math.nan,
    math.inf,
    -math.inf,
    -1.0,
    -1e-9,
    0.0,
    1.0000001,
    101.0,
    1e308,
    5e-324,
    2**70,
    -(2**63),
    0,
    1,
    True,
]
ODD_STRINGS = ["", "0.5", "NaN", "Infinity", "[/oops]", "\x1b[2J", "fp32", "<script>"]
ODD_KEYS = ["top1", "p50_ms", "batch", "precision", "accuracy", "latency", "x", ""]


# JSON values of any type and shape, biased to numbers that cannot be measurements.
ODD_VALUES = st.recursive(
    st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.floats(),
        st.integers(-(2**70), 2**70),
        st.sampled_from(ODD_STRINGS),
        st.text(max_size=6),
        st.none(),
        st.booleans(),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(ODD_KEYS), inner, max_size=3),
    max_leaves=6,
)
# One time in ten the JSON text itself is damaged: (0, where, cut or replace, by what).
TEXT_DAMAGE = st.tuples(
    st.integers(0, 9), st.floats(0, 1, exclude_max=True), st.booleans(), st.sampled_from('{}[]",:0-eN\x00\u202e')
)


def _fuzzed_text(base: str, edits: List[tuple], damage: tuple) -> str:
    """The report (`base`, its JSON) with its edits (a value replaced, a key removed, a number
    negated) and, maybe, its JSON text cut or a character changed."""
    report = json.loads(base)
    for path, action, value in edits:
        try:
            _apply(report, path, action, value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed or replaced this path
    text = json.dumps(report)
    chance, where, cut, char = damage
    if chance == 0:
        at = int(where * len(text))
        text = text[:at] if cut else text[:at] + char + text[at + 1 :]
    return text


def test_fuzzed_reports_never_crash_and_never_pass_a_non_finite_number(built, tmp_path):
    """1,000 malformed report.json files (hypothesis, derandomized: the same cases on every
    run): reading and comparing each, as candidate or as baseline, ends in a one-line VtEdgeError
    or in a comparison of finite numbers only."""
    from pipeline.errors import VtEdgeError
    from pipeline.report.compare import compare_reports
    from pipeline.stages.report import read_report, render_comparison

    base = copy.deepcopy(built)
    for result in base["results"]:  # the shape matters, not 30 images
        result["predictions"] = {k: v[:4] for k, v in result["predictions"].items()}
    base["per_image"] = {
        "labels": base["per_image"]["labels"][:4],
        "reference": {k: v[:4] for k, v in base["per_image"]["reference"].items()},
    }
    source, base_text = tmp_path / "report.json", json.dumps(base)
    edits = st.lists(
        st.tuples(st.sampled_from(_paths(base)), st.sampled_from(["set", "set", "delete", "negate"]), ODD_VALUES),
        min_size=1,
        max_size=3,
    )
    outcomes = {"refused": 0, "compared": 0}

    @settings(
        max_examples=1000, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(edits, TEXT_DAMAGE, st.booleans())
    def read_and_compare(edits: List[tuple], damage: tuple, as_candidate: bool) -> None:
        source.write_text(_fuzzed_text(base_text, edits, damage))
        try:
            fuzzed = read_report(source)
            comparison = compare_reports(fuzzed, base) if as_candidate else compare_reports(base, fuzzed)
            render_comparison(comparison)
        except VtEdgeError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(source)), str(exc)
            outcomes["refused"] += 1
            return
        assert not _non_finite(json.loads(source.read_text())), "a report with a non-finite number was compared"
        outcomes["compared"] += 1

    read_and_compare()
    assert min(outcomes.values()) > 100, outcomes  # both ways out were exercised


def test_report_model_keeps_a_copy_of_a_report_dir_renderable(built, tmp_path, tiny_cpu_bundle):
    """`report DIR` on a bundle re-renders after the model check (a real bundle, its manifest verified)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_cpu_bundle / BUNDLE, bundle)
    result = cli("report", str(bundle))
    assert result.exit_code == 0, result.output
    assert "report.md" in result.stdout
