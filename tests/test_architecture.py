"""The house rules of pipeline/: data flows one way, so no module imports one of a higher room
(function-level imports included), no import cycle, and no side effect at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"

# Lowest room first. A module may import modules of its own room or of lower rooms only.
ROOMS = [
    ("errors", "names", "metrics", "artifacts", "host", "progress"),
    ("graphs", "report", "bundle"),  # libraries: the graph writers and twin, the report's parts, the bundle format
    ("data", "models"),
    ("config",),
    ("backends",),
    ("search",),  # the INT8 search: over graphs, priced and scored by the runtimes
    ("context",),
    ("stages",),
    ("train", "finish"),
    ("build",),
    ("api",),  # the Python entry: build, finish, verify, report, compare
    ("cli", "__main__"),
]
RANK = {room: rank for rank, rooms in enumerate(ROOMS) for room in rooms}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Every pipeline module imported anywhere in the file (top level or inside functions)."""
    tree = ast.parse(path.read_text())
    found = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("pipeline")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import inside a package
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            if base.startswith("pipeline"):
                found.add(base)
                found |= {
                    f"{base}.{a.name}"
                    for a in node.names
                    if (PACKAGE.parent / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").is_file()
                }
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in imports_of(path) if i in modules and i != name} for name, path in modules.items()}


def test_every_room_is_ranked():
    rooms = {room_of(m) for m in graph()} - {"__init__"}
    assert rooms <= set(RANK), f"rooms without a rank: {sorted(rooms - set(RANK))}"


def test_no_upward_import():
    upward = [
        f"{module} -> {imported}"
        for module, imported_set in graph().items()
        for imported in imported_set
        if room_of(module) != "__init__"
        and room_of(imported) != "__init__"
        and RANK[room_of(imported)] > RANK[room_of(module)]
    ]
    assert not upward, "imports from a higher room: " + ", ".join(sorted(upward))


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                raise AssertionError(
                    "import cycle: " + " -> ".join(trail[trail.index(nxt) :] + [nxt]) if nxt in trail else nxt
                )
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_importing_every_module_changes_no_process_state():
    code = (
        "import os, importlib, pkgutil, pipeline\n"
        "mask = os.umask(0o027); os.umask(mask)\n"
        "cwd = os.getcwd()\n"
        "for info in pkgutil.walk_packages(pipeline.__path__, 'pipeline.'):\n"
        "    if info.name.startswith(('pipeline.models', 'pipeline.train', 'pipeline.__main__')): "
        "continue  # torch: host only; __main__ runs the CLI\n"
        "    importlib.import_module(info.name)\n"
        "after = os.umask(0); os.umask(after)\n"
        "assert after == mask and os.getcwd() == cwd, (oct(after), oct(mask))\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_functions_stay_small():
    """No function over 60 lines or with more than 6 parameters (the CLI's commands excepted:
    their parameters are the command's options)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            command = path.name == "cli.py" and any("command" in ast.unparse(d) for d in node.decorator_list)
            args = node.args
            params = (
                len(args.posonlyargs)
                + len(args.args)
                + len(args.kwonlyargs)
                - (1 if args.args and args.args[0].arg in ("self", "cls") else 0)
            )
            lines = node.end_lineno - node.lineno + 1
            if lines > 60 or (params > 6 and not command):
                offenders.append(f"{module_name(path)}.{node.name}: {lines} lines, {params} parameters")
    assert not offenders, "; ".join(sorted(offenders))
    assert sum(1 for _ in (PACKAGE / "build.py").open()) < 150


def test_every_stage_has_one_signature_shape():
    """Each stage module: `run_<stage>(ctx, inputs)` and `summary(artifact)`; stages/ holds nothing else
    but the model intake and the CPU runtime choice the stages share."""
    import importlib
    import inspect

    from pipeline.stages import STAGE_MODULES

    for stage, name in STAGE_MODULES.items():
        module = importlib.import_module(f"pipeline.stages.{name}")
        run = getattr(module, f"run_{'bundle' if stage == 'report' else stage}")
        assert list(inspect.signature(run).parameters) == ["ctx", "inputs"], f"{module.__name__}.{run.__name__}"
        assert list(inspect.signature(module.summary).parameters) != [], f"{module.__name__}.summary"
    helpers = {"model_input", "onnx_import", "runtime_choice", "report"}
    modules = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules == set(STAGE_MODULES.values()) | helpers, sorted(modules - set(STAGE_MODULES.values()) - helpers)


def test_benchmarks_use_the_public_entry_not_stage_internals():
    """benchmarks/ reach the pipeline through pipeline.api (and the libraries: backends, data,
    models, graphs), never a stage module or the build's wiring."""
    offenders = []
    for path in (PACKAGE.parent / "benchmarks").glob("*.py"):
        for imported in imports_of(path):
            if imported.startswith(("pipeline.stages", "pipeline.build", "pipeline.context")):
                offenders.append(f"{path.name}: {imported}")
    assert not offenders, "; ".join(sorted(offenders))
