"""The decision log: every verdict, written off the request path, with its late true label.

:meth:`DecisionLog.record` only enqueues (a bounded queue; when it is full the oldest waiting
decision is dropped and counted in ``dropped_``); one writer thread inserts batches of
``batch_size`` (or whatever waited ``flush_interval_s``) and then applies retention (age and row
cap, feedback with its decision). :meth:`DecisionLog.attach_feedback` adds true labels, per item and
idempotently; monitors and re-certification read :meth:`DecisionLog.labelled`. Any SQLAlchemy URL
works; the default is an SQLite file under ``$CASCADE_HOME`` in WAL mode.

>>> log = DecisionLog("sqlite://")
>>> d = Decision(id=new_decision_id(), time=time.time(), probabilities=(0.9, 0.1), content_hash="h",
...              deferral_score=0.1, threshold=0.5, tie_key=None, tier="small", label="spam", deferred=False,
...              cost=0.001, degraded=False, forced=False, certified=True, certificate_id="c1", app_version="1.0",
...              tenant=None)
>>> log.record([d])
>>> [r.status for r in log.attach_feedback([(d.id, "ham"), ("nope", "ham")], labels=["spam", "ham"])]
['ok', 'unknown id']
>>> [(x.decision == d, x.true_label) for x in log.labelled()]
[(True, 'ham')]
>>> log.close()
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Self

import sqlalchemy as sa

from cascade.decision_db import create_tables, engine_for, insert_new, safe_url

logger = logging.getLogger(__name__)

TIERS = ("small", "expert", "abstained")
Tier = Literal["small", "expert", "abstained"]
FeedbackStatus = Literal["ok", "unknown id", "bad label", "conflict", "duplicate"]
_CHUNK = 500  # ids per IN (...) clause, under SQLite's variable limit

class DecisionLogError(RuntimeError):
    """The decision log database cannot be used; the message names the URL (never its password)."""


def new_decision_id() -> str:
    """A fresh verdict id (uuid4 hex), returned in the response and used as the feedback key."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Decision:
    """One served verdict as logged. ``probabilities`` are the small tier's calibrated class
    probabilities, ``deferral_score`` / ``threshold`` / ``tie_key`` the rule's inputs (the tie key only
    for a score tied at the threshold), ``deferred`` whether the rule deferred it (before the hard cap
    and the expert's health), ``tier`` / ``label`` / ``cost`` what was served and what it cost (``tier``
    ``abstained``: nothing was served, ``label`` is the one the last tier leaned to)."""

    id: str
    time: float
    content_hash: str
    probabilities: tuple[float, ...]
    deferral_score: float | None
    threshold: float
    tie_key: float | None
    tier: Tier
    label: str
    deferred: bool
    cost: float
    degraded: bool
    forced: bool
    certified: bool
    certificate_id: str | None
    app_version: str
    tenant: str | None

    def __post_init__(self) -> None:
        if self.tier not in TIERS:
            raise ValueError(f"Decision {self.id}: tier {self.tier!r} is not one of {list(TIERS)}")
        object.__setattr__(self, "probabilities", tuple(float(p) for p in self.probabilities))


@dataclass(frozen=True)
class FeedbackResult:
    """What happened to one feedback item: ``ok``, ``unknown id``, ``bad label``, ``conflict`` or ``duplicate``."""

    id: str
    status: FeedbackStatus


@dataclass(frozen=True)
class Labelled:
    """A logged decision with its true label and the time (unix seconds) the label arrived."""

    decision: Decision
    true_label: str
    received: float


# column types by the Decision field's annotation (``X | None`` makes the column nullable)
_SQL_TYPES: dict[str, Any] = {"str": sa.Text, "float": sa.Float, "bool": sa.Boolean, "Tier": sa.String(16),
                              "tuple[float, ...]": sa.Text}  # fmt: skip
metadata = sa.MetaData()
decisions_table = sa.Table("decisions", metadata, *(
    sa.Column(f.name, sa.String(32) if f.name == "id" else _SQL_TYPES[str(f.type).removesuffix(" | None")],
              primary_key=f.name == "id", nullable=str(f.type).endswith(" | None"), index=f.name == "time")
    for f in fields(Decision)
))  # fmt: skip
feedback_table = sa.Table(
    "feedback", metadata,
    sa.Column("decision_id", sa.String(32), primary_key=True),
    sa.Column("true_label", sa.Text, nullable=False),
    sa.Column("received", sa.Float, nullable=False, index=True),
)  # fmt: skip
certificates_table = sa.Table(
    "certificates", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("certificate", sa.Text, nullable=False),
)  # fmt: skip


def _row(decision: Decision) -> dict[str, Any]:
    return {**asdict(decision), "probabilities": json.dumps(decision.probabilities)}


def _decision(row: Any) -> Decision:
    values = {f.name: getattr(row, f.name) for f in fields(Decision)}
    return Decision(**{**values, "probabilities": tuple(json.loads(values["probabilities"]))})


class DecisionLog:
    """A decision log on ``url`` (default ``$CASCADE_HOME/decisions.sqlite``); tables made if missing.

    ``retention_days`` / ``max_rows`` (``None``: unbounded) bound what is kept; ``max_queue`` bounds
    the decisions waiting for the writer. ``dropped_`` counts decisions dropped from a full queue,
    ``failed_`` those whose insert failed (logged), ``written_`` those inserted by this object.
    """

    def __init__(
        self,
        url: str | None = None,
        retention_days: float | None = 30,
        max_rows: int | None = None,
        batch_size: int = 256,
        flush_interval_s: float = 0.5,
        max_queue: int = 100_000,
    ) -> None:
        if url is None:
            from cascade.paths import home

            url = f"sqlite:///{home() / 'decisions.sqlite'}"
        self.url, self.retention_days, self.max_rows = url, retention_days, max_rows
        self.batch_size, self.flush_interval_s, self.max_queue = batch_size, flush_interval_s, max_queue
        try:
            self.engine_ = engine_for(url)
            create_tables(self.engine_, metadata)
        except Exception as exc:
            raise DecisionLogError(f"decision log database {safe_url(url)}: {exc}") from None
        self.dropped_ = self.failed_ = self.written_ = 0
        self._queue: deque[Decision] = deque()
        self._enqueued = self._handled = 0
        self._flush_to = 0
        self._closing = self._closed = False
        self._cond = threading.Condition()
        self._db = threading.Lock()  # one connection at a time per object (also makes in-memory SQLite safe)
        self._writer = threading.Thread(target=self._run, name="decision-log-writer", daemon=True)
        self._writer.start()

    def record(self, decisions: Iterable[Decision]) -> None:
        """Enqueue decisions for the writer; never waits on I/O (a full queue drops its oldest)."""
        with self._cond:
            if self._closing:
                raise DecisionLogError(f"decision log {safe_url(self.url)} is closed")
            for decision in decisions:
                if len(self._queue) >= self.max_queue:
                    self._queue.popleft()
                    self.dropped_ += 1
                    self._handled += 1
                self._queue.append(decision)
                self._enqueued += 1
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every decision enqueued so far is written (or dropped / failed)."""
        with self._cond:
            self._flush_to = max(self._flush_to, self._enqueued)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._handled >= self._flush_to or not self._writer.is_alive())

    def close(self) -> None:
        """Flush, stop the writer and release the database; calling it again does nothing."""
        if self._closed:
            return
        self.flush()
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._writer.join()
        self.engine_.dispose()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closing or len(self._queue) >= self.batch_size or self._handled < self._flush_to,
                    timeout=self.flush_interval_s,
                )
                if self._closing and not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
            if batch:
                self._write(batch)
                with self._cond:
                    self._handled += len(batch)
                    self._cond.notify_all()

    def _write(self, batch: list[Decision]) -> None:
        try:
            with self._db, self.engine_.begin() as conn:
                conn.execute(decisions_table.insert(), [_row(d) for d in batch])
            self.written_ += len(batch)
        except Exception:
            self.failed_ += len(batch)
            logger.exception("decision log %s: %d decisions not written", safe_url(self.url), len(batch))
            return
        try:
            self.prune()
        except Exception:
            logger.exception("decision log %s: retention failed", safe_url(self.url))

    def prune(self) -> int:
        """Delete decisions older than ``retention_days`` and beyond ``max_rows`` (oldest first), with
        their feedback; return how many decisions went. The writer calls it after each batch."""
        removed = 0
        with self._db, self.engine_.begin() as conn:
            if self.retention_days is not None:
                too_old = decisions_table.c.time < time.time() - self.retention_days * 86400
                old_ids = sa.select(decisions_table.c.id).where(too_old)
                conn.execute(feedback_table.delete().where(feedback_table.c.decision_id.in_(old_ids)))
                removed += conn.execute(decisions_table.delete().where(too_old)).rowcount
            if self.max_rows is not None:
                newest_first = sa.select(decisions_table.c.id).order_by(
                    decisions_table.c.time.desc(), decisions_table.c.id.desc()
                )
                extra = conn.scalars(newest_first.offset(self.max_rows)).all()
                for start in range(0, len(extra), _CHUNK):
                    ids = extra[start : start + _CHUNK]
                    conn.execute(feedback_table.delete().where(feedback_table.c.decision_id.in_(ids)))
                    removed += conn.execute(decisions_table.delete().where(decisions_table.c.id.in_(ids))).rowcount
        return removed

    def attach_feedback(self, items: Sequence[tuple[str, str]], labels: Sequence[str],
                        wait_s: float | None = None) -> list[FeedbackResult]:
        """Attach ``(decision id, true label)`` items; one result per item, in order. Flushes first, so
        decisions recorded here are seen; an id not in the database yet is looked up again after
        ``wait_s`` (default: two flush intervals), as another replica may not have written it yet. A
        label outside ``labels`` is ``bad label``; the same label again is a ``duplicate`` (no-op); a
        different one for a labelled id a ``conflict`` (kept as is)."""
        self.flush()
        allowed = set(labels)
        ids = list({decision_id for decision_id, _ in items})
        missing = set(ids) - self._known(ids)
        if missing:
            time.sleep(2 * self.flush_interval_s + 0.1 if wait_s is None else wait_s)
        with self._db, self.engine_.begin() as conn:
            known: set[str] = set()
            stored: dict[str, str] = {}
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                known.update(conn.scalars(sa.select(decisions_table.c.id).where(decisions_table.c.id.in_(chunk))))
                query = sa.select(feedback_table.c.decision_id, feedback_table.c.true_label)
                stored.update(conn.execute(query.where(feedback_table.c.decision_id.in_(chunk))).all())
            planned, new_rows, received = [], [], time.time()
            for decision_id, true_label in items:
                if decision_id not in known:
                    status: FeedbackStatus = "unknown id"
                elif true_label not in allowed:
                    status = "bad label"
                elif decision_id in stored:
                    status = "duplicate" if stored[decision_id] == true_label else "conflict"
                else:
                    status = "ok"
                    stored[decision_id] = true_label
                    new_rows.append({"decision_id": decision_id, "true_label": true_label, "received": received})
                planned.append((decision_id, true_label, status))
            inserted = insert_new(conn, feedback_table, "decision_id", new_rows)
            lost = [row["decision_id"] for row in new_rows if row["decision_id"] not in inserted]
            if lost:  # another replica labelled them between our read and our insert
                query = sa.select(feedback_table.c.decision_id, feedback_table.c.true_label)
                stored.update(conn.execute(query.where(feedback_table.c.decision_id.in_(lost))).all())
            results = [FeedbackResult(decision_id, status if status != "ok" or decision_id in inserted else
                                      ("duplicate" if stored[decision_id] == true_label else "conflict"))
                       for decision_id, true_label, status in planned]
        return results

    def _known(self, ids: Sequence[str]) -> set[str]:
        known: set[str] = set()
        with self._db, self.engine_.connect() as conn:
            for start in range(0, len(ids), _CHUNK):
                chunk = list(ids[start : start + _CHUNK])
                known.update(conn.scalars(sa.select(decisions_table.c.id).where(decisions_table.c.id.in_(chunk))))
        return known

    def labelled(self, since: float | None = None, certificate_id: str | None = None,
                 logged_after: float | None = None) -> list[Labelled]:
        """Decisions with a true label, oldest label first; ``since``: only labels received after it;
        ``certificate_id``: only decisions served under that certificate; ``logged_after``: only
        decisions made after that time."""
        self.flush()
        query = sa.select(decisions_table, feedback_table.c.true_label, feedback_table.c.received).join(
            feedback_table, feedback_table.c.decision_id == decisions_table.c.id
        )
        if since is not None:
            query = query.where(feedback_table.c.received > since)
        if certificate_id is not None:
            query = query.where(decisions_table.c.certificate_id == certificate_id)
        if logged_after is not None:
            query = query.where(decisions_table.c.time > logged_after)
        with self._db, self.engine_.connect() as conn:
            rows = conn.execute(query.order_by(feedback_table.c.received, decisions_table.c.id)).all()
        return [Labelled(_decision(row), row.true_label, row.received) for row in rows]

    def decisions(self, after: float | None = None, until: float | None = None,
                  certificate_id: str | None = None) -> list[Decision]:
        """Logged decisions made in ``(after, until]`` (either end open when ``None``), oldest first
        (ties by id), optionally only those served under ``certificate_id``. Reads what is in the
        database: other writers' decisions appear once they have flushed."""
        self.flush()
        query = sa.select(decisions_table)
        if after is not None:
            query = query.where(decisions_table.c.time > after)
        if until is not None:
            query = query.where(decisions_table.c.time <= until)
        if certificate_id is not None:
            query = query.where(decisions_table.c.certificate_id == certificate_id)
        with self._db, self.engine_.connect() as conn:
            rows = conn.execute(query.order_by(decisions_table.c.time, decisions_table.c.id)).all()
        return [_decision(row) for row in rows]

    def record_certificate(self, certificate_id: str, certificate: dict[str, Any], reason: str) -> bool:
        """Keep a served certificate (the first time its id is seen; returns whether it was new), so
        every ``certificate_id`` in the log can be looked up, replaced ones included."""
        with self._db, self.engine_.begin() as conn:
            known = conn.scalar(sa.select(certificates_table.c.id).where(certificates_table.c.id == certificate_id))
            if known is not None:
                return False
            row = {"id": certificate_id, "time": time.time(), "reason": reason,
                   "certificate": json.dumps(certificate, sort_keys=True)}
            return bool(insert_new(conn, certificates_table, "id", [row]))

    def certificates(self) -> list[dict[str, Any]]:
        """Every certificate recorded, oldest first: ``id``, ``time``, ``reason``, ``certificate``."""
        with self._db, self.engine_.connect() as conn:
            rows = conn.execute(sa.select(certificates_table).order_by(certificates_table.c.time)).all()
        return [{"id": r.id, "time": r.time, "reason": r.reason, "certificate": json.loads(r.certificate)} for r in rows]

    def export(self, path: str | Path, format: Literal["csv", "parquet"] = "parquet") -> int:
        """Write every decision with its true label and its arrival time (empty / null if none) to
        ``path``; return the row count. CSV keeps ``probabilities`` as JSON text, Parquet as doubles."""
        from cascade.decision_export import write_csv, write_parquet

        if format not in ("csv", "parquet"):
            raise ValueError(f"export format {format!r} is not one of ['csv', 'parquet']")
        self.flush()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joined = decisions_table.outerjoin(feedback_table, feedback_table.c.decision_id == decisions_table.c.id)
        query = sa.select(decisions_table, feedback_table.c.true_label, feedback_table.c.received).select_from(joined)
        with self._db, self.engine_.connect() as conn:
            streamed = conn.execution_options(stream_results=True, yield_per=10_000)  # a server-side cursor
            result = streamed.execute(query.order_by(decisions_table.c.time, decisions_table.c.id)).mappings()
            chunks = (list(chunk) for chunk in result.partitions(10_000))
            return write_csv(path, chunks) if format == "csv" else write_parquet(path, chunks)
