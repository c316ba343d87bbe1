"""The `crosspromo` command line. Data goes to stdout, notices and progress to stderr.

Every command runs inside one error boundary (`engine.cli_boundary`: exit codes, `error:`
lines, incident ids); options are typed and checked at parse time (`engine.cli_options`).
Why this module is one piece (about 500 lines): it is the command table, one short function
per command, each turning options into one engine call and its output.

Start time matters (`--help`, `validate`): this module imports no store, analysis, plotting
or server code at the top; each command imports what it uses.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from engine.cli_boundary import (
    EXIT_ERROR,
    EXIT_GUARDRAIL,
    EXIT_INVALID,
    EXIT_SRM,
    EXIT_STORE,
    GuardedGroup,
    err,
    fail,
    out,
    remember_store,
)
from engine.cli_options import (
    CorrectionChoice,
    DbOption,
    DecideFormat,
    EvaluateFormat,
    ExperimentArg,
    ExperimentsArg,
    Format,
    InputFormatChoice,
    PathsArg,
    RecommenderChoice,
    Seed,
    check_bind,
    check_store_exists,
    finite_in,
    is_loopback,
    parse_context,
    text_option,
    unit_option,
)
from engine.redact import redact_url

__all__ = ["EXIT_ERROR", "EXIT_GUARDRAIL", "EXIT_INVALID", "EXIT_SRM", "EXIT_STORE", "CorrectionChoice",
           "RecommenderChoice", "app"]

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.config import EngineConfig
    from engine.spec import ExperimentSpec
    from policies.simulation.bandits import Truth

app = typer.Typer(
    name="crosspromo",
    help="Marketing experimentation engine: bandits, A/B tests and winners for cross-promotions.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    cls=GuardedGroup,
)


def settings() -> EngineConfig:
    """The engine settings, loaded on use: validating them loads the experiment model, which
    `--help` does without."""
    from engine.config import load_config

    return load_config()


def open_engine(db: str | None) -> Engine:
    """The engine on the store at `db` (default: the configured one), remembered for errors."""
    from engine.api import Engine

    return Engine.open(remember_store(db or settings().database_url))


def default_paths(paths: list[Path] | None) -> list[Path]:
    return paths or [settings().experiments_dir]


def declared_spec(key: str, paths: list[Path] | None) -> ExperimentSpec:
    """The experiment `key` as declared in the YAML files (not the store)."""
    from engine.loader import load_specs

    specs = {s.key: s for s in load_specs(default_paths(paths))}
    if key not in specs:
        raise ValueError(f"no experiment {key!r} in {', '.join(map(str, default_paths(paths)))}")
    return specs[key]


def print_json(data: Any) -> None:
    out.print(json.dumps(data, indent=2, allow_nan=False), markup=False)


@app.command()
def validate(paths: PathsArg = None) -> None:
    """Check experiment files; exit 2 with one `file:line:col: field: message` line per problem."""
    from engine.loader import SpecError, load_specs

    failed: SpecError | None = None
    try:
        specs = load_specs(default_paths(paths))
    except SpecError as exc:  # the valid files are still reported as such
        specs, failed = exc.valid, exc
    if specs or not failed:
        err.print(f"{len(specs)} experiment(s) valid: {', '.join(s.key for s in specs)}", markup=False)
    if failed:
        raise failed


@app.command()
def apply(
    paths: PathsArg = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    db: DbOption = None,
) -> None:
    """Create or update experiments from YAML. Unsafe changes to running A/B tests exit 1."""
    from engine.api import UnsafeChangeError

    with open_engine(db) as engine:
        try:
            plan = engine.apply(default_paths(paths), dry_run=dry_run)
        except UnsafeChangeError as exc:
            plan = exc.plan
        for item in plan.items:
            version = f" (v{item.version})" if item.version else ""
            out.print(f"{item.action:9} {item.key}{version}", markup=False)
            for change in item.changes:
                out.print(f"          {change}", markup=False)
            if item.reason:
                out.print(f"          refused: {item.reason}", markup=False)
        if plan.refused:
            fail(f"{len(plan.refused)} unsafe change(s); nothing applied", plan.refused[0].hint)
        err.print("dry run: nothing applied" if dry_run else f"applied to {redact_url(engine.store.url)}",
                  markup=False)


@app.command()
def decide(
    experiment: ExperimentArg,
    unit: Annotated[str, typer.Option("--unit", help="Unit (user) id.", callback=unit_option)],
    context: Annotated[list[str] | None, typer.Option("--context", help="key=value; repeatable.",
                                                      callback=text_option)] = None,
    fmt: Annotated[DecideFormat, typer.Option("--format")] = DecideFormat.TEXT,
    db: DbOption = None,
) -> None:
    """Ask which arm and channel to use for a unit (logs the exposure)."""
    with open_engine(db) as engine:
        d = engine.decide(experiment, unit, parse_context(context or []))
    if fmt is DecideFormat.JSON:
        print_json(d.to_dict())
    else:
        out.print(f"{d.arm or '-'}\t{d.channel or '-'}\t{d.reason.value}\tbucket={d.bucket}\t"
                  f"propensity={d.propensity}\tdecision_id={d.decision_id}", markup=False)


@app.command()
def record(
    event: Annotated[str, typer.Argument(help='One event as JSON, e.g. \'{"event_id": "e1", ...}\'.',
                                         callback=text_option)],
    db: DbOption = None,
) -> None:
    """Record one outcome event (idempotent on event_id)."""
    from engine.events import parse_json

    with open_engine(db) as engine:
        new = engine.record(parse_json(event))
    err.print("recorded" if new else "duplicate: already recorded, not counted again", markup=False)


EXIT_REJECTED = 1


INGEST_EPILOG = ("Exit 0 when rows were stored or already there; 1 when every row was rejected "
                 "(nothing accepted), or with --strict when any row was rejected.")
InputFormatOption = Annotated[InputFormatChoice | None, typer.Option(
    "--input-format", help="jsonl or csv (default: by suffix: .csv; .jsonl, .ndjson, .json; "
                           "else jsonl if the first non-blank byte is {, else csv).")]
StrictOption = Annotated[bool, typer.Option("--strict", help="Exit 1 if any row was rejected.")]
RejectsOption = Annotated[Path | None, typer.Option(
    "--rejects", dir_okay=False, help="Write rejected rows to FILE as JSONL {line, error} instead of stderr.")]
SummaryFormat = Annotated[DecideFormat, typer.Option("--format", help="Summary as text or json.")]


@app.command(epilog=INGEST_EPILOG)
def ingest(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV file of events; - (or a pipe) reads stdin.")],
    input_format: InputFormatOption = None,
    strict: StrictOption = False,
    rejects: RejectsOption = None,
    fmt: SummaryFormat = DecideFormat.TEXT,
    db: DbOption = None,
) -> None:
    """Import events; bad rows are reported as FILE:LINE: reason and skipped, good rows kept.

    The file is read once, so pipes work. Rejections are reported as they are found; the JSON
    summary lists the first 100 and counts them all (rejected_count)."""
    with _ingesting(file, rejects, db) as (engine, progress, on_reject):
        summary = engine.ingest_file(file, progress=progress, on_reject=on_reject,
                                     fmt=input_format.value if input_format else None)
    if fmt is DecideFormat.JSON:
        print_json(summary.to_dict())
    else:
        out.print(f"{summary.accepted} accepted, {summary.duplicates} duplicates, "
                  f"{summary.rejected_count} rejected", markup=False)
    _ingest_exit(summary.accepted + summary.duplicates + summary.spooled, summary.rejected_count, strict)


@app.command("ingest-graph", epilog=INGEST_EPILOG)
def ingest_graph(
    file: Annotated[Path, typer.Argument(help="JSONL or CSV file of edges (source, target, kind, weight); "
                                              "- (or a pipe) reads stdin.")],
    input_format: InputFormatOption = None,
    strict: StrictOption = False,
    rejects: RejectsOption = None,
    fmt: SummaryFormat = DecideFormat.TEXT,
    db: DbOption = None,
) -> None:
    """Import social-graph edges; bad rows are reported as FILE:LINE: reason and skipped, good rows kept.

    kind is follow (directed: source follows target), share or referral (undirected); weight
    is a finite number > 0 (default 1). Idempotent on (source, target, kind): an edge seen
    again is a duplicate, or updated when its weight changed. The social recommender reads the
    edges at its next refit."""
    with _ingesting(file, rejects, db) as (engine, progress, on_reject):
        summary = engine.ingest_graph_file(file, progress=progress, on_reject=on_reject,
                                           fmt=input_format.value if input_format else None)
    if fmt is DecideFormat.JSON:
        print_json(summary.to_dict())
    else:
        out.print(f"{summary.accepted} accepted, {summary.updated} updated, {summary.duplicates} duplicates, "
                  f"{summary.rejected_count} rejected", markup=False)
    _ingest_exit(summary.accepted + summary.updated + summary.duplicates, summary.rejected_count, strict)


@contextmanager
def _ingesting(file: Path, rejects: Path | None, db: str | None
               ) -> Iterator[tuple[Engine, Callable[[int], None], Callable[[int, str], None]]]:
    """What `ingest` and `ingest-graph` share: the file's checks, the engine, the progress bar on
    a terminal and where rejections go. A CSV header naming no usable columns fails the command."""
    from engine.events import STDIN, EventFileError

    name = "<stdin>" if file == STDIN else str(file)
    if file != STDIN and (not file.exists() or file.is_dir()):
        fail(f"FILE: {name} is {'a directory' if file.is_dir() else 'not there'}",
             "name a JSONL or CSV file, or - to read standard input", code=EXIT_INVALID)
    if rejects is not None and rejects.exists() and file.exists() and rejects.samefile(file):
        fail(f"--rejects {rejects}: is the file being ingested; writing rejections there would erase it",
             "name another file for --rejects", code=EXIT_INVALID)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("ingesting"), BarColumn(), MofNCompleteColumn(), console=err,
                   disable=not err.is_terminal, transient=True)
    with open_engine(db) as engine, _reject_sink(name, rejects) as on_reject, bar:
        task = bar.add_task("ingest", total=_count_lines(file))
        try:
            yield engine, lambda n: bar.advance(task, n), on_reject
        except EventFileError as exc:
            fail(f"{name}:{exc.line}: {exc.reason}", "nothing was ingested from this file")


def _ingest_exit(good: int, rejected: int, strict: bool) -> None:
    if rejected and not good:
        fail(f"nothing accepted: all {rejected} row(s) were rejected", code=EXIT_REJECTED)
    if rejected and strict:
        fail(f"{rejected} row(s) rejected (--strict)", code=EXIT_REJECTED)


@contextmanager
def _reject_sink(name: str, path: Path | None) -> Iterator[Callable[[int, str], None]]:
    """Where rejections go as they are found: `NAME:LINE: reason` lines on stderr, or JSONL to `path`."""
    if path is None:
        yield lambda line, reason: err.print(f"{name}:{line}: {reason}", markup=False)
        return
    try:
        fh = path.open("w", encoding="utf-8")
    except OSError as exc:
        fail(f"--rejects: cannot write {path}: {exc.strerror}")
    with fh:
        yield lambda line, reason: fh.write(json.dumps({"line": line, "error": reason}) + "\n")


def _count_lines(path: Path) -> int | None:
    """Lines of a regular file, for the progress bar; None for a stream, which is read only once."""
    import stat

    from engine.events import STDIN

    if path == STDIN or not stat.S_ISREG(path.stat().st_mode):
        return None
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _reports(engine: Engine, experiments: list[str] | None, by: str | None = None) -> list[Any]:
    from engine.breakdown import UnknownAttributeError
    from engine.report import build_report

    keys = experiments or sorted(s.spec.key for s in engine.experiments())
    try:
        return [build_report(engine, k, by=by) for k in keys]
    except UnknownAttributeError as exc:
        fail(f"--by {exc}", exc.hint, EXIT_INVALID)


@app.command()
def report(
    experiments: ExperimentsArg = None,
    fmt: Annotated[Format, typer.Option("--format")] = Format.TABLE,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write PNG charts of each experiment to DIR.",
                                              metavar="DIR", file_okay=False)] = None,
    by: Annotated[str | None, typer.Option(
        "--by", metavar="ATTR", help="Add an exploratory breakdown of the primary metric by `channel` or a context "
                                     "attribute of the units' first exposure (never changes the verdict).",
        callback=text_option)] = None,
    db: DbOption = None,
) -> None:
    """Per-arm results, significance and the verdict of each experiment."""
    from engine.report_format import render_markdown, render_table

    with open_engine(db) as engine:
        reports = _reports(engine, experiments, by)
        if plot is not None:
            from engine.plots import plot_report
            from engine.timeline import conversion_timeline

            for r in reports:
                stored = engine.experiment(r.data["experiment"])
                timeline = conversion_timeline(engine.store.sa, stored.spec.key, stored.phase, stored.spec.arm_keys)
                for path in plot_report(r.to_dict(), timeline, plot):
                    err.print(f"wrote {path}", markup=False)
    if fmt is Format.JSON:
        print_json([r.to_dict() for r in reports] if not experiments or len(experiments) != 1
                   else reports[0].to_dict())
    elif fmt is Format.MARKDOWN:
        out.print(render_markdown(reports), markup=False)
    else:
        render_table(reports, out)


@app.command()
def winners(
    experiments: ExperimentsArg = None,
    fail_on_srm: Annotated[bool, typer.Option("--fail-on-srm", help="Exit 3 if any experiment has an SRM.")] = False,
    fail_on_guardrail: Annotated[bool, typer.Option(
        "--fail-on-guardrail", help="Exit 4 if any experiment's verdict is guardrail_failed.")] = False,
    db: DbOption = None,
) -> None:
    """One verdict line per experiment."""
    from engine.report_format import verdict_lines

    with open_engine(db) as engine:
        reports = _reports(engine, experiments)
    for r in reports:
        for line in verdict_lines(r.to_dict()):
            out.print(line, markup=False)
    if fail_on_srm and any((r.to_dict().get("srm") or {}).get("flagged") for r in reports):
        raise typer.Exit(EXIT_SRM)
    if fail_on_guardrail and any(r.to_dict()["verdict"]["status"] == "guardrail_failed" for r in reports):
        raise typer.Exit(EXIT_GUARDRAIL)


@app.command("sample-size")
def sample_size(
    baseline: Annotated[float, typer.Option(help="Control conversion rate (binary) or mean (with --std).")],
    mde: Annotated[float, typer.Option(help="Minimum detectable effect.")],
    relative: Annotated[bool, typer.Option("--relative/--absolute", help="MDE relative to the baseline.")] = True,
    alpha: Annotated[float, typer.Option(help="Family-wise significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Power for each comparison.")] = 0.8,
    arms: Annotated[int, typer.Option(help="Arms including the control.")] = 2,
    correction: Annotated[CorrectionChoice, typer.Option(help="Multiple-testing correction.")] = CorrectionChoice.HOLM,
    std: Annotated[float | None, typer.Option(help="Standard deviation per exposure: plans a revenue metric.")] = None,
    fmt: Annotated[DecideFormat, typer.Option("--format")] = DecideFormat.TEXT,
) -> None:
    """Exposures needed per arm to detect the MDE (statsmodels power analysis, corrected alpha).

    Inputs that admit no plan (an MDE too small to detect, a rate outside (0, 1), ...) exit 2
    with the option at fault."""
    from dataclasses import asdict

    from policies.stats.planning import plan_binary_sample_size, plan_mean_sample_size

    common = dict(relative=relative, alpha=alpha, power=power, arms=arms, correction=correction.value)
    plan = (plan_binary_sample_size(baseline, mde, **common) if std is None
            else plan_mean_sample_size(baseline, std, mde, **common))
    if fmt is DecideFormat.JSON:
        print_json(asdict(plan))
        return
    out.print(f"{plan.n_per_arm:,} exposures per arm, {plan.total:,} in all ({plan.arms} arms)", markup=False)
    err.print(f"baseline {plan.baseline:g} -> target {plan.target:g}; alpha per comparison {plan.alpha_per_test:.4g} "
              f"({correction.value}); power {plan.power:g}; effect size {plan.effect_size:.4g}", markup=False)


@app.command()
def demo(
    out_path: Annotated[Path, typer.Option("--out", help="SQLite file to create. An existing file is replaced only "
                                                        "if it is a demo store, or with --force.")] = Path(
        "crosspromo-demo.db"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it is not a demo store.")] = False,
    users: Annotated[int | None, typer.Option(min=1, help="Simulated users [default: configs/demo.yaml].")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="Seed [default: configs/demo.yaml].")] = None,
    config: Annotated[Path, typer.Option(help="Demo settings and true rates.", dir_okay=False)] = Path(
        "configs/demo.yaml"),
) -> None:
    """Apply experiments/ to a fresh SQLite file, simulate users through decide -> outcome, report."""
    from engine.demo import run_demo
    from engine.report_format import render_table, verdict_line

    result = run_demo(out_path, config, settings().experiments_dir, users=users, seed=seed, force=force,
                      notice=lambda m: err.print(m, markup=False))
    render_table(result.reports, out)
    out.print("Winners:", markup=False)
    for r in result.reports:
        out.print("  " + verdict_line(r.to_dict()), markup=False)


@app.command()
def simulate(
    experiment: Annotated[str, typer.Argument(help="Key of an experiment in experiments/ (without --runs: a "
                                                   "bandit).", callback=text_option)],
    users: Annotated[int | None, typer.Option(min=1, help="Simulated users (decisions) of a single simulation "
                                                          "[default: 100000].")] = None,
    truth: Annotated[list[str] | None, typer.Option(help="ARM=RATE (revenue: ARM=RATE:MEAN_VALUE); repeatable "
                                                         "[default: configs/demo.yaml].")] = None,
    seed: Seed = 0,
    drift: Annotated[list[str] | None, typer.Option(help="'swap' (best and worst arm swap halfway) or "
                                                         "STEP:ARM=RATE,...; repeatable.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", metavar="DIR", file_okay=False,
                                              help="Write regret and weight PNGs to DIR.")] = None,
    fmt: Annotated[DecideFormat, typer.Option("--format")] = DecideFormat.TEXT,
    paths: Annotated[list[Path] | None, typer.Option("--experiments", help="Where to find the experiment.")] = None,
    runs: Annotated[int | None, typer.Option(min=1, help="Simulate this many experiments of the declared design "
                                                         "and read each as the report does.")] = None,
    look_every: Annotated[int | None, typer.Option(min=1, help="With --runs: read every K exposures (and at the "
                                                               "end) [default: a twentieth of the run].")] = None,
    max_exposures: Annotated[int | None, typer.Option(min=1, help="With --runs: exposures per run [default: A/B "
                                                                  "test, its planned sample; bandit, 20000].")] = None,
) -> None:
    """Run an experiment's declared policy against a simulated population: conversions, regret, weights.
    With --runs: how often its verdict calls a winner, a wrong one, how soon, and the regret."""
    from engine.demo import load_truth
    from engine.simulation import parse_drift, parse_truth, plot_simulation, run_simulation

    if runs is None and (look_every is not None or max_exposures is not None):
        raise typer.BadParameter("needs --runs", param_hint="'--look-every' / '--max-exposures'")
    if runs is not None and (users is not None or plot is not None):
        raise typer.BadParameter("a single simulation's option; with --runs use --max-exposures",
                                 param_hint="'--users' / '--plot'")
    spec = declared_spec(experiment, paths)
    demo = Path("configs/demo.yaml")
    defaults = load_truth(demo)["experiments"].get(experiment) if demo.exists() else None
    true = parse_truth(spec, truth or [], defaults)
    if runs is not None:
        _simulate_runs(spec, true, runs, look_every, max_exposures, seed, drift or [], fmt)
        return
    users = 100_000 if users is None else users
    report = run_simulation(spec, true, users, seed, parse_drift(spec, true, drift or [], users))
    data = report.to_dict()
    if fmt is DecideFormat.JSON:
        print_json(data)
    else:
        out.print(f"{experiment}: {data['users']:,} users, {data['conversions']:,.1f} conversions, "
                  f"regret {data['regret']:,.1f} against the best arm ({data['best_arm']})", markup=False)
        for arm, w in data["weights"].items():
            out.print(f"  {arm:24} weight {w:6.1%}   decisions {data['pulls'][arm]:>9,}", markup=False)
    if plot is not None:
        for path in plot_simulation(report, plot):
            err.print(f"wrote {path}", markup=False)


def _simulate_runs(spec: ExperimentSpec, true: Truth, runs: int, look_every: int | None, max_exposures: int | None,
                   seed: int, drift: list[str], fmt: DecideFormat) -> None:
    import time

    from engine.simulation import default_exposures, parse_drift, run_many, runs_lines
    from policies.simulation.runs import RunPlan

    exposures = default_exposures(spec, true) if max_exposures is None else max_exposures
    every = -(-exposures // 20) if look_every is None else look_every  # 20 looks by default
    if every > exposures:
        raise typer.BadParameter(f"{every:,} exceeds the exposures per run ({exposures:,}); lower it or raise "
                                 "--max-exposures", param_hint="'--look-every'")
    started = time.perf_counter()
    report = run_many(spec, true, RunPlan(runs, exposures, every), seed, parse_drift(spec, true, drift, exposures))
    err.print(f"{runs:,} runs in {time.perf_counter() - started:.1f} s", markup=False)
    if fmt is DecideFormat.JSON:
        print_json(report.to_dict())
    else:
        for line in runs_lines(report.to_dict()):
            out.print(line, markup=False)


@app.command()
def evaluate(
    log: Annotated[Path, typer.Argument(help="CSV log: arm, reward, propensity [, unit, timestamp, ctx_*].",
                                        exists=True, dir_okay=False)],
    experiment: Annotated[str, typer.Option("--experiment", help="Key of the experiment that logged it.",
                                            callback=text_option)],
    fmt: Annotated[EvaluateFormat, typer.Option("--format")] = EvaluateFormat.TABLE,
    recommender: Annotated[RecommenderChoice | None, typer.Option(
        help="Recommender to evaluate [default: the experiment's targeting, else hybrid].")] = None,
    strength: Annotated[float | None, typer.Option(help="Targeting strength in [0, 1] to evaluate.",
                                                   callback=finite_in(0.0, 1.0))] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the folds, replay draws and bootstrap.")] = 0,
    resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples.")] = 1000,
    paths: Annotated[list[Path] | None, typer.Option("--experiments", help="Where to find the experiment.")] = None,
    graph: Annotated[Path | None, typer.Option(
        "--graph", exists=True, dir_okay=False,
        help="Social graph (an ingest-graph file): also evaluates the social policy, and feeds a social "
             "targeting.")] = None,
) -> None:
    """Off-policy evaluation: replay, IPS, SNIPS and DR for the targeted, context-free and logging policies
    (and the social one with --graph).

    Reads its own `export-log` files back exactly: cells that export-log prefixed with a single
    quote (formula neutralisation) lose that quote."""
    from engine.offpolicy import evaluate_log, evaluation_targeting, read_log, render_evaluation
    from engine.spec import Recommender

    spec = declared_spec(experiment, paths)
    rows, problems = read_log(log, spec)
    for line, reason in problems:
        err.print(f"{log}:{line}: {reason}", markup=False)
    edges = None
    if graph is not None:
        from engine.events import EventFileError
        from engine.graph import read_edge_file

        try:
            edges, bad_edges = read_edge_file(graph)
        except EventFileError as exc:
            fail(f"--graph {graph}:{exc.line}: {exc.reason}", "fix the header: source, target, kind, weight")
        for line, reason in bad_edges:
            err.print(f"{graph}:{line}: {reason}", markup=False)
    chosen = Recommender(recommender.value) if recommender is not None else None
    targeting = evaluation_targeting(spec, rows, chosen, strength)
    result = evaluate_log(spec, rows, targeting, seed=seed, resamples=resamples, skipped=len(problems), graph=edges)
    if fmt is EvaluateFormat.JSON:
        print_json(result.to_dict())
    else:
        render_evaluation(result, out)
    err.print(f"{result.rows:,} rows evaluated, {result.skipped:,} skipped", markup=False)


@app.command(epilog="Exit 0 when the classifier was trained and measured; 1 when the catalogue has too few usable "
                    "rows or topics (bad rows are reported and skipped first); 2 when FILE is missing.")
def classify(
    catalogue: Annotated[Path, typer.Option(
        "--catalogue", dir_okay=False, help="Labelled catalogue: .csv (columns text, topics; topics separated by ;) "
                                            "or .yaml (a list of {text, topics}).")],
    folds: Annotated[int, typer.Option(min=2, max=20, help="Cross-validation folds.")] = 5,
    seed: Seed = 0,
    fmt: Annotated[EvaluateFormat, typer.Option("--format")] = EvaluateFormat.TABLE,
    write_tags: Annotated[bool, typer.Option(
        "--write-tags", help="Also predict tags for the arms of applied experiments that declare none (from their "
                             "description) and store them for the content recommender.")] = False,
    db: DbOption = None,
) -> None:
    """Train the campaign classifier on a labelled catalogue; print cross-validated F1 per topic and macro-F1.

    Bad rows are reported as FILE:LINE: reason and skipped, good rows kept. The classifier is
    character n-gram TF-IDF with one logistic regression per topic: Chinese and English alike,
    no word segmenter, nothing downloaded."""
    from contextlib import nullcontext

    from engine.catalogue import read_catalogue
    from engine.classify import check_catalogue, default_classifier, evaluate_catalogue, tag_arms

    if not catalogue.exists() or catalogue.is_dir():
        fail(f"--catalogue {catalogue}: is {'a directory' if catalogue.is_dir() else 'not there'}",
             "name a labelled catalogue: a .csv or .yaml file", code=EXIT_INVALID)
    data = read_catalogue(catalogue)
    for line, reason in data.problems:
        err.print(f"{catalogue}:{line}: {reason}", markup=False)
    warnings = check_catalogue(data, folds)
    for warning in warnings:
        err.print(f"warning: {warning}", markup=False)
    classifier = default_classifier()
    with open_engine(db) if write_tags else nullcontext() as engine:  # a bad --db fails before training
        result = evaluate_catalogue(data, folds, seed, classifier)
        tagging = tag_arms(engine.store, classifier.fit(data.texts, data.labels), classifier.name) if engine else None
    err.print(f"{len(data.rows):,} rows used, {len(data.problems):,} skipped; {result.scheme}", markup=False)
    if fmt is EvaluateFormat.JSON:
        print_json(_classify_json(data, result, classifier.name, warnings, tagging))
        return
    out.print(f"{'topic':24} {'rows':>6} {'precision':>9} {'recall':>7} {'f1':>6}", markup=False)
    for t in result.per_topic:
        out.print(f"{t.topic:24} {t.support:>6,} {t.precision:>9.3f} {t.recall:>7.3f} {t.f1:>6.3f}", markup=False)
    out.print(f"macro-F1 {result.macro_f1:.3f}  (micro-F1 {result.micro_f1:.3f}; {result.folds}-fold, "
              f"{result.rows:,} rows; {classifier.name})", markup=False)
    if tagging is not None:
        _print_tagging(tagging)


def _print_tagging(tagging: Any) -> None:
    from engine.classify import render_tags

    out.print("predicted tags:", markup=False)
    for t in tagging.tagged:
        out.print(f"  {t.experiment}/{t.arm} -> {render_tags(t.tags)}", markup=False)
    if not tagging.tagged:
        out.print("  (none: every applied arm declares tags or has no description)", markup=False)
    for key, arm in tagging.undescribed:
        err.print(f"{key}/{arm}: declares no tags and no description: not tagged", markup=False)


def _classify_json(data: Any, result: Any, classifier: str, warnings: list[str], tagging: Any) -> dict[str, Any]:
    return {
        "catalogue": data.path, "rows": len(data.rows),
        "skipped": [{"line": line, "error": reason} for line, reason in data.problems[:KEPT_SKIPPED]],
        "skipped_count": len(data.problems), "classifier": classifier, "cross_validation": result.scheme,
        "folds": result.folds, "macro_f1": result.macro_f1, "micro_f1": result.micro_f1,
        "per_topic": {t.topic: {"support": t.support, "precision": t.precision, "recall": t.recall, "f1": t.f1}
                      for t in result.per_topic},
        "warnings": warnings,
        "tags": None if tagging is None else [
            {"experiment": t.experiment, "arm": t.arm, "tags": [{"topic": k, "score": s} for k, s in t.tags]}
            for t in tagging.tagged],
        "untagged": None if tagging is None else [{"experiment": k, "arm": a} for k, a in tagging.undescribed],
    }


KEPT_SKIPPED = 100  # skipped rows listed in the JSON summary (all are counted, and printed to stderr)


@app.command()
def tags(
    experiments: ExperimentsArg = None,
    fmt: Annotated[DecideFormat, typer.Option("--format")] = DecideFormat.TEXT,
    db: DbOption = None,
) -> None:
    """Each arm's tags and their source: declared (YAML), predicted (`classify --write-tags`, with
    scores), stale (predicted from an older description; not used) or none."""
    from engine.classify import render_tags
    from engine.tags import tag_views

    with open_engine(db) as engine:
        keys = experiments or sorted(s.spec.key for s in engine.experiments())
        stored = engine.store.arm_tags()
        views = [v for key in keys for v in tag_views(engine.experiment(key).spec, stored)]
    if fmt is DecideFormat.JSON:
        print_json([v.to_dict() for v in views])
        return
    width = (max((len(v.experiment) for v in views), default=0), max((len(v.arm) for v in views), default=0))
    for v in views:
        shown = (render_tags([(t, s) for t, s in v.tags if s is not None]) if v.source in ("predicted", "stale")
                 else ", ".join(t for t, _ in v.tags)) or "-"
        out.print(f"{v.experiment:{width[0]}}  {v.arm:{width[1]}}  {v.source:9}  {shown}", markup=False)


@app.command()
def quarantine(
    fmt: Annotated[DecideFormat, typer.Option("--format", help="Output format.")] = DecideFormat.TEXT,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows, oldest first.")] = None,
    db: DbOption = None,
) -> None:
    """Rows the database refused (poison rows), kept aside instead of lost: their kind, the
    database's reason and the row as JSON."""
    with open_engine(db) as engine:
        rows = engine.store.quarantined(limit)
    if fmt is DecideFormat.JSON:
        print_json(rows)
        return
    for row in rows:
        out.print(f"{row['id']}\t{row['ts']}\t{row['kind']}\t{row['reason']}\t"
                  f"{json.dumps(row['record'], separators=(',', ':'))}", markup=False)
    err.print(f"{len(rows)} quarantined row(s)", markup=False)


@app.command()
def weights(
    experiment: ExperimentArg,
    fmt: Annotated[DecideFormat, typer.Option("--format", help="Output format.")] = DecideFormat.TEXT,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the last N refreshes.")] = None,
    db: DbOption = None,
) -> None:
    """A bandit's weights over time in the current phase: every refresh, oldest first, with its
    reason (an arm taken out of traffic by a guardrail says so)."""
    with open_engine(db) as engine:
        spec = engine.experiment(experiment).spec
        history = engine.store.weights_history(spec.key, spec.traffic.phase, limit)
    if fmt is DecideFormat.JSON:
        print_json([{"ts": h.ts.isoformat(), "weights": h.weights, "reason": h.reason} for h in history])
        return
    for h in history:
        shares = " ".join(f"{arm}={w:.3f}" for arm, w in h.weights.items())
        out.print(f"{h.ts.isoformat(timespec='seconds')}\t{shares}\t{h.reason}", markup=False)
    err.print(f"{len(history)} refresh(es)", markup=False)


@app.command("export-log")
def export_log_command(
    experiment: ExperimentArg,
    out_path: Annotated[Path, typer.Option("--out", help="CSV file to write.", dir_okay=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace --out even if it is a database.")] = False,
    db: DbOption = None,
) -> None:
    """Write an experiment's logged decisions (current phase) as a CSV log for `evaluate`.
    An existing --out that is a SQLite database (the store itself, say) is not replaced
    unless --force is given.

    A unit or context cell that a spreadsheet would run as a formula (it starts with = + - @,
    a tab or a carriage return), or that starts with a single quote, is written with a single
    quote in front (OWASP's advice against CSV injection); `evaluate` removes it again."""
    from engine.db import sqlite_header
    from engine.offpolicy import export_log

    if not force and sqlite_header(out_path) is not None:
        fail(f"--out {out_path}: is a SQLite database; refusing to replace it with a CSV log",
             "choose another --out, or pass --force to replace it")
    with open_engine(db) as engine:
        written = export_log(engine.store, engine.experiment(experiment).spec, out_path)
    err.print(f"wrote {written:,} decisions to {out_path}", markup=False)


db_app = typer.Typer(help="The store's schema revision, and its upgrade to this crosspromo's (Alembic).",
                     no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("current")
def db_current(
    fmt: Annotated[DecideFormat, typer.Option("--format", help="Output format.")] = DecideFormat.TEXT,
    db: DbOption = None,
) -> None:
    """The store's schema revision, this crosspromo's head and what an upgrade would apply.
    Changes nothing (other commands upgrade the store they open)."""
    from engine.db import create_engine, read
    from engine.migrations import HEAD, STATUS_TEXT, read_state

    url = remember_store(db or settings().database_url)
    sa = create_engine(url, existing=True)
    try:
        with read(sa) as conn:
            state = read_state(conn)
    finally:
        sa.dispose()
    data = {"store": redact_url(url), "revision": state.revision, "head": HEAD, "status": state.status,
            "pending": state.pending}
    if fmt is DecideFormat.JSON:
        print_json(data)
        return
    out.print(f"store     {data['store']}\nrevision  {state.revision or 'none'}\nhead      {HEAD}\n"
              f"status    {state.status}: {STATUS_TEXT[state.status]}", markup=False)
    if state.pending:
        out.print(f"pending   {', '.join(state.pending)}", markup=False)


@db_app.command("upgrade")
def db_upgrade(
    fmt: Annotated[DecideFormat, typer.Option("--format", help="Output format.")] = DecideFormat.TEXT,
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL of the upgrade instead of running it "
                                                    "(PostgreSQL).")] = False,
    db: DbOption = None,
) -> None:
    """Bring the store to this crosspromo's schema revision (head), as opening it does, under
    the store's migration lock: replicas starting at once wait for one upgrade."""
    from engine.db import create_engine
    from engine.migrations import bring_to_head, upgrade_sql

    url = remember_store(db or settings().database_url)
    sa = create_engine(url, existing=sql)  # printing the SQL makes no store
    try:
        if sql and sa.dialect.name != "postgresql":
            fail("--sql: prints the upgrade of a PostgreSQL store; SQLite changes a table by rebuilding it from "
                 "the live file", "run 'crosspromo db upgrade' without --sql (copy the file first to keep a backup)",
                 EXIT_INVALID)
        if sql:
            out.print((upgrade_sql(sa, url) or "-- the store is at head: nothing to run").rstrip("\n"), markup=False)
            return
        done = bring_to_head(sa, url)
    finally:
        sa.dispose()
    data = {"store": redact_url(url), "before": done.before.revision, "before_status": done.before.status,
            "action": done.action, "applied": done.applied, "revision": done.head}
    if fmt is DecideFormat.JSON:
        print_json(data)
        return
    said = {"none": f"already at {done.head} (head): nothing to do",
            "created": f"created at {done.head} (head)",
            "upgraded": f"upgraded from {done.before.revision or 'a release before migrations'} to {done.head}"
                        f" (applied {', '.join(done.applied)})"}
    out.print(f"{data['store']}: {said[done.action]}", markup=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind [default: configs/engine.yaml].",
                                             callback=text_option)] = None,
    port: Annotated[int | None, typer.Option(help="Port, 1-65535 [default: configs/engine.yaml].",
                                             callback=finite_in(1, 65535))] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each keeps its own snapshot).")] = 1,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept requests without API keys (local use).")] = False,
    seed: Annotated[int | None, typer.Option(min=0, help="Seed bandit draws (one worker: reproducible).")] = None,
    db: DbOption = None,
) -> None:
    """Serve decisions and events over HTTP (FastAPI; OpenAPI at /docs)."""
    import uvicorn

    config = settings()
    host = host if host is not None else config.server_host
    port = port if port is not None else config.server_port
    if not 1 <= port <= 65535:
        fail(f"server.port in configs/engine.yaml: {port} is not a port (1..65535)", "fix the file or pass --port",
             EXIT_INVALID)
    check_bind(host, port)
    if db:
        os.environ["CROSSPROMO_DATABASE_URL"] = db
    if no_auth:
        os.environ["CROSSPROMO_NO_AUTH"] = "1"
    if seed is not None:
        os.environ["CROSSPROMO_SEED"] = str(seed)
    # One secret for every worker, so a dashboard session signed by one is valid on the others.
    os.environ.setdefault("CROSSPROMO_SESSION_SECRET", secrets.token_hex(32))
    uvicorn.run("engine.server:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


@app.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Address to bind; other than loopback only with a viewer key.",
                                      callback=text_option)] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port, 1-65535 [default: configs/engine.yaml].",
                                             callback=finite_in(1, 65535))] = None,
    db: DbOption = None,
) -> None:
    """Serve the results dashboard read-only (open on loopback; elsewhere viewers sign in with a key)."""
    import uvicorn

    from engine.dashboard_app import create_dashboard_app
    from engine.server import ApiKeys

    config = settings()
    port = port if port is not None else config.server_port
    keys = ApiKeys.from_env(config)
    loopback = is_loopback(host)
    if not loopback and keys.viewer is None:
        fail(f"refusing to serve the dashboard on {host}: not a loopback address, and no viewer key is set",
             f"set {config.viewer_key_env} (named by server.api_keys.viewer_env in configs/engine.yaml), "
             "or bind --host 127.0.0.1", EXIT_INVALID)
    check_bind(host, port)
    url = db or config.database_url
    check_store_exists(url)
    with open_engine(url) as engine:
        err.print(f"dashboard on http://{host}:{port}/ui/ (read-only{'' if loopback else ', sign-in'})",
                  markup=False)
        uvicorn.run(create_dashboard_app(engine, keys, auth=not loopback), host=host, port=port,
                    log_level="warning", access_log=False)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="crosspromo")


if __name__ == "__main__":  # pragma: no cover
    main()
