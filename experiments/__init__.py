"""The experiment harness: score each tier once, then sweep thresholds, fit budgets and report."""
