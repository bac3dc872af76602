"""`python -m pipeline`: commands only. Each parses its options, calls into the package, prints.

Errors the user can fix are printed as one line starting with `error:` and exit non-zero:
2 for configuration and usage errors, 1 for everything else (bad input files, failed gates).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.errors import ConfigError, VtEdgeError

try:
    from typing import Annotated
except ImportError:  # Python 3.8 (JetPack 5)
    from typing_extensions import Annotated

app = typer.Typer(
    help="vt-edge: trained Visual Transformer -> validated inference engine bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Configuration file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table (for scripts).")]
LockTimeoutOption = Annotated[
    Optional[float],
    typer.Option(
        "--lock-timeout",
        min=0,
        help=(
            "Seconds to wait while another process writes the same bundle (default: wait until it is done; "
            "0: fail at once)."
        ),
    ),
]
EXIT_CONFIG = 2


def fail(message: str, code: int = 1) -> None:
    from pipeline.report.text import visible

    # Messages quote files and keys the user gave: no markup, no control sequence reaches the terminal.
    err.print(f"[red]error:[/red] {escape(visible(message))}", soft_wrap=True)
    raise typer.Exit(code)


TargetOption = Annotated[
    str, typer.Option("--target", "-t", help="Target name or alias from pipeline.toml (see `targets`).")
]
BundleOption = Annotated[
    Optional[Path],
    typer.Option("--bundle", help="Finish an existing bundle on the device (build and validate its TensorRT engines)."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the build plan and trtexec equivalent; build nothing.")
]
RequireEngineOption = Annotated[
    bool, typer.Option("--require-engine", help="Fail when the target's engine cannot be built on this host.")
]
NoGateOption = Annotated[bool, typer.Option("--no-gate", help="Report budget failures without failing the build.")]
DlaCoreOption = Annotated[
    Optional[int],
    typer.Option(
        "--dla-core",
        min=0,
        help="Plan the FP16/INT8 engines for this DLA core (GPU fallback on); a TensorRT target with DLA only.",
    ),
]
NoProgressOption = Annotated[bool, typer.Option("--no-progress", help="No progress bars (logs, CI).")]
ModelOption = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        "-m",
        help="Model file instead of [model] checkpoint: .onnx, .pt/.pth (vt-edge checkpoint or state_dict) "
        "or .safetensors.",
    ),
]
LabelsOption = Annotated[
    Optional[Path],
    typer.Option("--labels", help="Class names, one a line, in the model's output order (instead of [model] labels)."),
]


@app.command()
def build(
    target: TargetOption = "cpu",
    config: ConfigOption = Path("pipeline.toml"),
    bundle: BundleOption = None,
    dry_run: DryRunOption = False,
    require_engine: RequireEngineOption = False,
    no_gate: NoGateOption = False,
    dla_core: DlaCoreOption = None,
    no_progress: NoProgressOption = False,
    lock_timeout: LockTimeoutOption = None,
    model: ModelOption = None,
    labels: LabelsOption = None,
) -> None:
    """Run every stage for a target and write its bundle to engines/<model>-<target>/."""
    from pipeline import api
    from pipeline.context import BuildOptions

    options = BuildOptions(
        target=target,
        config_path=config,
        gate=not no_gate,
        progress=not no_progress,
        require_engine=require_engine,
        dla_core=dla_core,
        lock_timeout_s=lock_timeout,
    )
    with _user_errors():
        cfg = api.load(config, model, labels)
        api.check_options(cfg, options, finishing=bundle is not None)
        if dry_run:
            _print_plans(cfg, options, bundle)
            return
        outcome = _build_or_finish(cfg, options, bundle, (model, labels))
    _gate_and_pending(outcome, options)


def _build_or_finish(cfg, options, bundle: Optional[Path], model_files: Tuple[Optional[Path], Optional[Path]]):
    """The host build (or, with a bundle, the device finish), its stages and summary printed."""
    from pipeline import api
    from pipeline.context import StageLog

    bars = ProgressLines(live=options.progress and err.is_terminal)
    log = StageLog(on_stage=bars.stage_done(_print_stage), on_message=_say, on_progress=bars.step)
    if bundle is not None:
        outcome = api.finish(bundle, options.config_path, options=options, log=log)
    else:
        target_name, target_config = cfg.target(options.target)
        err.print(
            f"[bold]vt-edge build[/bold] target [cyan]{target_name}[/cyan] ({target_config.backend}), "
            f"config {escape(str(options.config_path))}"
        )
        model, labels = model_files
        outcome = api.build(options.target, options.config_path, model=model, labels=labels, options=options, log=log)
    _print_summary(outcome.report, log)
    return outcome


def _gate_and_pending(outcome, options) -> None:
    if outcome.gate_failures:
        first = outcome.gate_failures[0]
        more = f" (and {len(outcome.gate_failures) - 1} more)" if len(outcome.gate_failures) > 1 else ""
        if options.gate:
            fail(f"gate: {first}{more}; see {outcome.bundle}/report/report.md", 1)
        err.print(f"[yellow]gate (not enforced):[/yellow] {escape(first)}{more}")
    if outcome.pending:
        err.print(
            f"engines left for the device ({outcome.left_reason}); finish on the device with: {outcome.finish_command}",
            soft_wrap=True,
            markup=False,
        )


@contextmanager
def _user_errors():
    """Errors the user can fix end as one line; anything else is a bug and keeps its traceback."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), EXIT_CONFIG)
    except VtEdgeError as exc:
        fail(_first_line(exc))
    except OSError as exc:
        fail(_os_error(exc))


class ProgressLines:
    """Renders a stage's progress steps: a rich bar with the time left on a terminal, else one
    line a step (`--no-progress`, logs, CI). The bar goes when its stage's line is printed."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.bar = None
        self.tasks: dict = {}

    def step(self, step) -> None:
        if not self.live:
            detail = f" ({step.detail})" if step.detail else ""
            err.print(
                f"    {step.task}: {step.done}/{step.total}{detail}", markup=False, soft_wrap=True, highlight=False
            )
            return
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("    {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self.bar.start()
        if step.task not in self.tasks:
            self.tasks[step.task] = self.bar.add_task(escape(step.task), total=step.total)
        self.bar.update(self.tasks[step.task], completed=step.done, total=step.total)

    def stage_done(self, then):
        def done(entry) -> None:
            if self.bar is not None:
                self.bar.stop()
                self.bar, self.tasks = None, {}
            then(entry)

        return done


def _line(text: str) -> None:
    """A line of a long run's news on standard output, at once (logs of `--no-progress` runs)."""
    print(text, flush=True)


def _say(text: str) -> None:
    err.print(text, markup=False, soft_wrap=True)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _os_error(exc: OSError) -> str:
    """An OSError as one line with its path, and "disk full" when that is the cause."""
    import errno

    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    if exc.errno == errno.ENOSPC:
        return f"{where}disk full ({exc.strerror or exc}); free space and run again"
    return f"{where}{exc.strerror or _first_line(exc)}"


def _print_stage(entry) -> None:
    state = "[dim]cached[/dim]" if entry.cached else f"{entry.wall_s:6.1f} s"
    from pipeline.stages import summary

    detail = summary(entry.stage, entry.result)
    if entry.stage == "report" and entry.cached:
        detail = f"{entry.result} is up to date"
    err.print(f"  {entry.stage:<10} {state:>8}  {escape(detail)}", soft_wrap=True)


def _print_summary(report, log) -> None:
    from rich.table import Table

    from pipeline.stages.report import summary_rows

    table = Table(title=f"{report['bundle']}{' (CPU proxy)' if report.get('cpu_proxy') else ''}")
    for column in ("precision", "top-1 %", "drop pts", "agreement %", "p50 b1 ms", "vs torch b1"):
        table.add_column(column, justify="right")
    for row in summary_rows(report):
        table.add_row(
            row["precision"],
            f"{row['top1']:.2f}",
            "" if row["drop"] is None else f"{row['drop']:+.2f}",
            f"{row['agreement']:.2f}",
            "" if row["p50_b1"] is None else f"{row['p50_b1']:.3f}",
            "" if row["speedup_vs_torch"] is None else f"{row['speedup_vs_torch']:.2f}x",
        )
    out.print(table)
    if log.entries and log.all_cached:
        err.print("nothing changed: every stage came from the cache")


def _print_plans(cfg, options, bundle: Optional[Path] = None) -> None:
    """`--dry-run`: the target's plans (or a bundle's) pinned per TensorRT release, each with a
    trtexec line that runs as printed from this folder; needs no TensorRT."""
    from pipeline.artifacts import path_for_user
    from pipeline.backends.tensorrt import find_tensorrt, format_plan, gpu_device, read_build_plans, tensorrt_status
    from pipeline.stages.engine import make_plans, plans_by_release

    plain = Console(highlight=False, soft_wrap=True)  # trtexec lines stay copy-pasteable
    target_name, target = cfg.target(options.target)
    if target.backend != "tensorrt":
        plain.print(
            f"{target_name} uses {target.backend}: no TensorRT plan (stages: export, simplify, precision "
            f"{', '.join(target.precisions)}, engine, validate, report)",
            markup=False,
        )
        return
    plain.print(f"build plan for {target_name} ({target.description}); this host: {tensorrt_status()}", markup=False)
    if bundle is None:
        bundle = cfg.path(cfg.engines_dir) / f"{cfg.model.name}-{target_name}"
        plans = make_plans(cfg, target_name, target, cfg.preprocessing.crop, options.dla_core)
    else:
        plans = read_build_plans(bundle)
    trt = find_tensorrt()
    groups = plans_by_release(plans, trt, gpu_device() if trt is not None else None)
    where = path_for_user(bundle)
    for group in groups:
        plain.print(
            f"== with TensorRT {group.release}: what the finish builds (engine names as it looks them up) ==",
            markup=False,
        )
        for plan in group.plans:
            plain.print(format_plan(plan, bundle_dir=where), markup=False)
        for problem in group.problems:
            plain.print(f"  no engine for {problem}", markup=False)
        plain.print("")
    if not groups:  # wildcard versions ("10.x"): the release and GPU are known on the device only
        for plan in plans:
            plain.print(format_plan(plan, bundle_dir=where), markup=False)
            plain.print("")


@app.command()
def train(
    config: ConfigOption = Path("pipeline.toml"),
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Checkpoint path (default: model.checkpoint of the config)."),
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    zip_path: Annotated[
        Optional[Path],
        typer.Option("--zip", help='The photos\' zip for [train] source = "cifar10-zip" (overrides [train] zip).'),
    ] = None,
) -> None:
    """Train the configured VT on its training set (generated by default, or photos in a zip), deterministically \
on CPU."""
    from pipeline import api

    with _user_errors():
        result = api.train(config, output=output, zip=zip_path, progress=not no_progress, log=_line)
    out.print(
        f"saved {os.path.normpath(result.checkpoint)}: train top-1 {100 * result.train_accuracy:.2f}%, held-out top-1 "
        f"{100 * result.holdout_accuracy:.2f}% on {result.holdout_images} images, {result.epochs} epochs in "
        f"{result.wall_s:.0f} s"
    )


@app.command()
def models(
    input_size: Annotated[
        int, typer.Option("--input-size", min=32, help="Square input resolution (a multiple of 32).")
    ] = 224,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Also write the table as JSON here.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Params and FLOPs of VT-ResNet-18/34 against ResNet-18/34 (paper width, 1000 classes)."""
    from pipeline import api
    from pipeline.artifacts import write_json_atomic

    stats = api.paper_models(input_size)
    records = [dict(s.__dict__) for s in stats]
    if output:
        with _user_errors():
            write_json_atomic(output, records)
    if as_json:
        _print_json(records)
        return
    rows = [[s.name, f"{s.params / 1e6:.2f}", f"{s.flops / 1e9:.3f}", f"{s.macs / 1e9:.3f}"] for s in stats]
    _print_listing(f"models at {input_size}x{input_size}", ["model", "params (M)", "GFLOPs", "GMACs"], rows)


TARGET_COLUMNS = [
    "target",
    "backend",
    "CC",
    "JetPack",
    "TensorRT",
    "DLA",
    "workspace",
    "batch min/opt/max",
    "precisions",
    "budget ms",
]


@app.command()
def targets(config: ConfigOption = Path("pipeline.toml"), as_json: JsonOption = False) -> None:
    """List the targets of the configuration."""
    from pipeline import api

    with _user_errors():
        cfg = api.load(config)
    aliases: dict[str, list[str]] = {}
    for alias, name in cfg.aliases.items():
        aliases.setdefault(name, []).append(alias)
    if as_json:
        _print_json(
            [
                {"name": name, "aliases": aliases.get(name, []), **t.model_dump(mode="json")}
                for name, t in cfg.targets.items()
            ]
        )
        return
    rows = []
    for name, t in cfg.targets.items():
        label = f"{name} ({', '.join(aliases[name])})" if name in aliases else name
        gpu = t.backend == "tensorrt"  # workspace, DLA and batch profile only mean something to TensorRT
        rows.append(
            [
                label,
                t.backend,
                t.compute_capability or "-",
                t.jetpack or "-",
                ", ".join(t.tensorrt_versions) or "-",
                str(t.dla_cores) if gpu else "-",
                f"{t.workspace_mib} MiB" if gpu else "-",
                f"{t.profile.min}/{t.profile.opt}/{t.profile.max}" if gpu else "-",
                ", ".join(t.precisions),
                f"{t.latency_budget_ms:g}" if t.latency_budget_ms else "-",
            ]
        )
    _print_listing(f"targets ({config})", TARGET_COLUMNS, rows)


def _print_json(value: Any) -> None:
    out.print(json.dumps(value, indent=2), markup=False, highlight=False, soft_wrap=True)


def listing_table(title: str, columns: Sequence[str], rows: List[List[str]]):
    """A rich table whose cells fold onto more lines when the terminal is narrow: never cut."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=False)
    for row in rows:
        table.add_row(*row)
    return table


def plain_listing(title: str, columns: Sequence[str], rows: List[List[str]]) -> str:
    """Aligned plain text, as wide as its content: what a pipe or a file gets (no width to fit)."""
    widths = [max(len(cell) for cell in cells) for cells in zip(columns, *rows)]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _print_listing(title: str, columns: Sequence[str], rows: List[List[str]]) -> None:
    if out.is_terminal:
        out.print(listing_table(title, columns, rows))
    else:
        out.print(plain_listing(title, columns, rows), markup=False, highlight=False, soft_wrap=True)


@app.command()
def report(
    bundle: Annotated[
        Path, typer.Argument(help="Bundle folder, e.g. engines/vt_demo-cpu (or, with a baseline, a report.json).")
    ],
    baseline: Annotated[
        Optional[Path],
        typer.Argument(
            help=(
                "Compare against this baseline (a bundle folder or a saved report.json) instead of "
                "re-rendering; exit 1 on regression."
            )
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="With a baseline: also write the comparison as Markdown to this file."),
    ] = None,
    max_slowdown: Annotated[
        float,
        typer.Option(
            min=0, help="Latency regression: p50 at batch 1 slower than the baseline by more than this fraction ..."
        ),
    ] = 0.10,
    min_slowdown_ms: Annotated[float, typer.Option(min=0, help="... and by more than this many milliseconds.")] = 0.1,
    lock_timeout: LockTimeoutOption = None,
) -> None:
    """Re-render a bundle's report (Markdown, HTML, plots) from its report.json; with BASELINE, compare the two \
and fail on regression."""
    from pipeline import api

    if baseline is not None:
        _compare_reports(bundle, baseline, output, (max_slowdown, min_slowdown_ms))
        return
    with _user_errors():
        written = api.report(bundle, lock_timeout, _say)
    out.print("wrote " + ", ".join(_shown(p) for p in written), markup=False)


def _shown(value: Any) -> str:
    """A name or path from the user or from a report.json, as plain text for the terminal."""
    from pipeline.report.text import visible

    return visible(str(value))


def _compare_reports(candidate: Path, baseline: Path, output: Optional[Path], slowdown: Tuple[float, float]) -> None:
    """`report A B`: what changed from B to A per precision; exit 1 on any regression."""
    from pipeline import api

    with _user_errors():
        comparison = api.compare(candidate, baseline, *slowdown, output=output)
    out.print(_comparison_table(comparison, candidate, baseline))
    for note in comparison.notes:
        err.print("note: " + _shown(note), soft_wrap=True, markup=False)
    regressions = comparison.regressions
    if regressions:
        more = f" (and {len(regressions) - 1} more)" if len(regressions) > 1 else ""
        fail(f"regression against {baseline}: {regressions[0]}{more}")
    out.print(f"no regression against {_shown(baseline)}", markup=False)


def _comparison_table(comparison, candidate: Path, baseline: Path):
    from rich.table import Table
    from rich.text import Text

    # Bundle names and paths come from the reports and the command line: plain text, never markup.
    title = Text(_shown(f"{comparison.candidate} ({candidate}) against {comparison.baseline} ({baseline})"))
    table = Table(title=title)
    for column in (
        "precision",
        "top-1 % before",
        "after",
        "change pts",
        "same answers %",
        "p50 b1 ms before",
        "after",
        "change",
        "verdict",
    ):
        table.add_column(column, justify="right")

    def show(value, spec: str, scale: float = 1.0) -> str:
        return "-" if value is None else format(scale * value, spec)

    for row in comparison.rows:
        table.add_row(
            Text(_shown(row.precision)),
            show(row.top1_before, ".2f"),
            show(row.top1_after, ".2f"),
            show(row.top1_change, "+.2f"),
            show(row.agreement, ".2f", 100),
            show(row.p50_before, ".3f"),
            show(row.p50_after, ".3f"),
            show(row.p50_change, "+.1%"),
            "[red]REGRESSED[/red]" if row.regressions else "[green]ok[/green]",
        )
    return table


@app.command("generate-data")
def generate_data(
    root: Annotated[Path, typer.Argument(help="Output folder (ImageFolder layout).")],
    per_class: Annotated[int, typer.Option(help="Images per class.")] = 30,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same files.")] = 0,
    size: Annotated[int, typer.Option(help="Image side in pixels.")] = 224,
) -> None:
    """Generate the labelled demo image set (10 classes of shape x texture, JPEG)."""
    from pipeline import api

    with _user_errors():
        dataset = api.generate_data(root, per_class, seed, size)
    out.print(f"{root}: {len(dataset.samples)} images in {len(dataset.classes)} classes")


@app.command()
def verify(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")]) -> None:
    """Check a bundle's manifest and the SHA-256 of every file."""
    from pipeline import api

    with _user_errors():
        manifest = api.verify(bundle)
    out.print(f"bundle OK: {len(manifest.files)} files verified ({manifest.name}, target {manifest.target.name})")


def main() -> None:
    app(prog_name="python -m pipeline")


if __name__ == "__main__":
    sys.exit(main())
