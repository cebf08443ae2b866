"""``python -m experiments.chain CONFIG [--results DIR] [--refresh]``: run a chain experiment, print its verdict."""

from __future__ import annotations

import argparse
import json
import sys

from cascade.config import CascadeConfig, ConfigError
from experiments.chain.run import run_chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="cascade YAML with tiers and a chain budget")
    parser.add_argument("--results", default=None, help="results root (default: the config's experiment.results_dir)")
    parser.add_argument("--refresh", action="store_true", help="rescore every tier, ignoring the cache")
    args = parser.parse_args(argv)
    try:
        out = run_chain(CascadeConfig.from_yaml(args.config), results_root=args.results, refresh=args.refresh)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    numbers = json.loads((out / "results.json").read_text())
    print(numbers["verdict"])
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
