"""The review queue: samples no tier answered confidently (``source: "abstained"``), kept for people.

An abstained sample is stored with its decision id (the id its verdict carries) in the decision log's
database, so a reviewer reads it (``GET /v1/review``) and sends the true label back through
``POST /v1/feedback`` like any other label; a labelled item leaves the queue. Items follow the
decision log's retention.

>>> from cascade.decision_log import DecisionLog
>>> log = DecisionLog("sqlite://")
>>> queue = ReviewQueue(log)
>>> queue.add([ReviewItem("d1", time.time(), None, {"text": "wire me $500"})])
>>> [item.decision_id for item in queue.pending()]
['d1']
>>> log.close()
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cascade.decision_db import create_tables, insert_new
from cascade.decision_log import DecisionLog, feedback_table

metadata = sa.MetaData()
review_table = sa.Table(
    "review", metadata,
    sa.Column("decision_id", sa.String(32), primary_key=True),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("tenant", sa.Text, nullable=True),
    sa.Column("sample", sa.Text, nullable=False),
)  # fmt: skip


@dataclass(frozen=True)
class ReviewItem:
    """An abstained sample: its decision id, when it was decided, its tenant, the sample itself."""

    decision_id: str
    time: float
    tenant: str | None
    sample: dict[str, Any]


class ReviewQueue:
    """Abstained samples in ``log``'s database (table ``review``), oldest first until labelled."""

    def __init__(self, log: DecisionLog) -> None:
        self.log = log
        create_tables(log.engine_, metadata)

    def add(self, items: list[ReviewItem]) -> None:
        """Store ``items`` now (a reviewer may read them at once); an id stored already is kept as is."""
        rows = [{"decision_id": i.decision_id, "time": i.time, "tenant": i.tenant,
                 "sample": json.dumps(i.sample)} for i in items]
        with self.log._db, self.log.engine_.begin() as conn:
            insert_new(conn, review_table, "decision_id", rows)

    def pending(self, limit: int = 100, tenant: str | None = None, after: float | None = None) -> list[ReviewItem]:
        """Items with no label yet, oldest first: at most ``limit``, of ``tenant`` (all when None),
        decided after ``after``. Items past the decision log's retention are dropped first."""
        self.prune()
        labelled = sa.select(feedback_table.c.decision_id)
        query = sa.select(review_table).where(review_table.c.decision_id.not_in(labelled))
        if tenant is not None:
            query = query.where(review_table.c.tenant == tenant)
        if after is not None:
            query = query.where(review_table.c.time > after)
        query = query.order_by(review_table.c.time, review_table.c.decision_id).limit(limit)
        with self.log._db, self.log.engine_.connect() as conn:
            rows = conn.execute(query).all()
        return [ReviewItem(r.decision_id, r.time, r.tenant, json.loads(r.sample)) for r in rows]

    def count(self, tenant: str | None = None) -> int:
        """Items still waiting for a label."""
        labelled = sa.select(feedback_table.c.decision_id)
        query = sa.select(sa.func.count()).select_from(review_table).where(
            review_table.c.decision_id.not_in(labelled))
        if tenant is not None:
            query = query.where(review_table.c.tenant == tenant)
        with self.log._db, self.log.engine_.connect() as conn:
            return int(conn.scalar(query) or 0)

    def prune(self) -> int:
        """Drop items older than the decision log's retention; return how many went."""
        if self.log.retention_days is None:
            return 0
        cutoff = time.time() - self.log.retention_days * 86400
        with self.log._db, self.log.engine_.begin() as conn:
            return conn.execute(review_table.delete().where(review_table.c.time < cutoff)).rowcount
