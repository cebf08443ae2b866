"""The decision log a config describes (``serve.decision_log``): where it lives and how it is opened."""

from __future__ import annotations

import re
from typing import Any

from cascade.decision_log import DecisionLog


def decision_log_url(config: Any) -> str:
    """The decision log of ``config.serve.decision_log``: the URL in ``url_env`` (when that variable is
    set), else ``url``, else an SQLite file named after the config under ``$CASCADE_HOME/decisions``."""
    import os

    from cascade.paths import home

    settings = config.serve.decision_log
    if settings.url_env and os.environ.get(settings.url_env):
        return os.environ[settings.url_env]
    if settings.url:
        return str(settings.url)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", config.name).strip("-") or "cascade"
    return f"sqlite:///{home() / 'decisions' / f'{name}.sqlite'}"


def open_decision_log(config: Any) -> DecisionLog:
    """The :class:`DecisionLog` ``config.serve.decision_log`` describes (retention, batching, queue)."""
    settings = config.serve.decision_log
    return DecisionLog(decision_log_url(config), retention_days=settings.retention_days, max_rows=settings.max_rows,
                       batch_size=settings.batch_size, flush_interval_s=settings.flush_interval_s,
                       max_queue=settings.max_queue)
