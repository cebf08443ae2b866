"""N tiers and abstention, end to end: score every tier once, trace the chain's frontiers, certify one rule.

``python -m experiments.chain CONFIG`` (a config with ``tiers`` and a ``chain`` budget, or an ``expert``
and a ``chain`` budget: the one-hop case) writes ``results.json``, ``report.md`` and a plot into
``<experiment.results_dir>/<name>/`` (:func:`run_chain`).
"""

from experiments.chain.run import run_chain

__all__ = ["run_chain"]
