"""The decision log: record off the request path, batch, retain, attach feedback, export, persist."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from cascade.decision_log import Decision, DecisionLog, DecisionLogError, FeedbackResult, new_decision_id

LABELS = ["spam", "ham"]


def decision(at: float | None = None, **changes: object) -> Decision:
    values: dict[str, object] = dict(
        id=new_decision_id(), time=time.time() if at is None else at, content_hash="sha256:ab",
        probabilities=(0.8, 0.2), deferral_score=0.2, threshold=0.5, tie_key=0.25, tier="small",
        label="spam", deferred=False, cost=0.001, degraded=False, forced=False, certified=True, certificate_id="cert-1",
        app_version="1.2.3", tenant="acme",
    )  # fmt: skip
    return Decision(**{**values, **changes})  # type: ignore[arg-type]


def count_rows(log: DecisionLog, table: str) -> int:
    with log.engine_.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'nested' / 'decisions.sqlite'}"


def test_recorded_decisions_read_back_equal(url: str) -> None:
    recorded = [decision(), decision(deferral_score=None, tie_key=None, tier="abstained", certificate_id=None,
                                     tenant=None, degraded=True, forced=True, certified=False)]  # fmt: skip
    with DecisionLog(url) as log:
        log.record(recorded)
        assert [r.status for r in log.attach_feedback([(d.id, "ham") for d in recorded], LABELS)] == ["ok", "ok"]
        assert sorted((x.decision for x in log.labelled()), key=lambda d: d.id) == sorted(recorded, key=lambda d: d.id)


def test_wrong_tier_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'medium'"):
        decision(tier="medium")


def test_bad_url_fails_at_construction_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(DecisionLogError, match=r"nosuchdb://user:\*\*\*@host/db") as error:
        DecisionLog("nosuchdb://user:secret@host/db")
    assert "secret" not in str(error.value)
    with pytest.raises(DecisionLogError, match="sqlite:///"):
        DecisionLog(f"sqlite:///{tmp_path}")  # a directory, not a database file


def test_record_never_waits_for_a_slow_writer(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    log = DecisionLog(url, batch_size=10, flush_interval_s=0.01, max_queue=50)
    original = log._write
    monkeypatch.setattr(log, "_write", lambda batch: (release.wait(), original(batch)))
    for _ in range(30):
        log.record([decision() for _ in range(10)])  # 300 decisions, writer stuck on its first batch
    assert len(log._queue) == 50
    assert log.dropped_ >= 300 - 50 - 10
    release.set()
    log.close()
    assert log.written_ == 300 - log.dropped_ == count_rows(log, "decisions")


def test_many_records_become_few_inserts(url: str) -> None:
    log = DecisionLog(url, batch_size=100, flush_interval_s=60)
    inserts: list[int] = []
    sa.event.listen(log.engine_, "before_cursor_execute",
                    lambda conn, cursor, statement, params, context, many: inserts.append(many)
                    if statement.startswith("INSERT INTO decisions") else None)  # fmt: skip
    for _ in range(1000):
        log.record([decision()])
    log.flush()
    assert count_rows(log, "decisions") == 1000
    assert len(inserts) <= 12 and all(inserts)
    log.close()


def test_retention_by_age_removes_old_decisions_and_their_feedback(url: str) -> None:
    now = time.time()
    old, fresh = decision(at=now - 3 * 86400), decision(at=now)
    with DecisionLog(url, retention_days=None) as log:
        log.record([old, fresh])
        log.attach_feedback([(old.id, "ham"), (fresh.id, "ham")], LABELS)
        log.retention_days = 2
        assert log.prune() == 1
        assert [x.decision.id for x in log.labelled()] == [fresh.id]
        assert count_rows(log, "feedback") == 1


def test_retention_by_max_rows_keeps_the_newest(url: str) -> None:
    now = time.time()
    decisions = [decision(at=now - 100 + i) for i in range(10)]
    with DecisionLog(url, retention_days=None) as log:
        log.record(decisions)
        log.attach_feedback([(d.id, "spam") for d in decisions], LABELS)
        log.max_rows = 4
        log.record([decision(at=now)])  # the writer prunes after each batch
        log.flush()
        kept = {x.decision.id for x in log.labelled()}
        assert kept == {d.id for d in decisions[-3:]}
        assert count_rows(log, "decisions") == 4 and count_rows(log, "feedback") == 3


def test_feedback_reports_each_outcome_per_item_and_is_idempotent(url: str) -> None:
    a, b = decision(), decision()
    with DecisionLog(url) as log:
        log.record([a, b])  # not flushed: attach_feedback must see them
        items = [(a.id, "ham"), ("unknown", "ham"), (b.id, "eggs"), (a.id, "ham"), (a.id, "spam")]
        assert log.attach_feedback(items, LABELS) == [
            FeedbackResult(a.id, "ok"), FeedbackResult("unknown", "unknown id"), FeedbackResult(b.id, "bad label"),
            FeedbackResult(a.id, "duplicate"), FeedbackResult(a.id, "conflict"),
        ]  # fmt: skip
        assert [r.status for r in log.attach_feedback([(a.id, "ham")], LABELS)] == ["duplicate"]
        assert [r.status for r in log.attach_feedback([(a.id, "spam")], LABELS)] == ["conflict"]
        assert [(x.decision.id, x.true_label) for x in log.labelled()] == [(a.id, "ham")]


def test_labelled_since_reads_only_newer_labels(url: str) -> None:
    a, b = decision(), decision()
    with DecisionLog(url) as log:
        log.record([a, b])
        log.attach_feedback([(a.id, "ham")], LABELS)
        checkpoint = log.labelled()[-1].received
        time.sleep(0.01)
        log.attach_feedback([(b.id, "spam")], LABELS)
        assert [x.decision.id for x in log.labelled(since=checkpoint)] == [b.id]


def test_export_csv_and_parquet_round_trip(url: str, tmp_path: Path) -> None:
    now = time.time()
    labelled, unlabelled = decision(at=now - 1), decision(at=now, tie_key=None, tenant=None)
    with DecisionLog(url) as log:
        log.record([labelled, unlabelled])
        log.attach_feedback([(labelled.id, "ham")], LABELS)
        assert log.export(tmp_path / "out.csv", "csv") == 2
        assert log.export(tmp_path / "out.parquet", "parquet") == 2
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["true_label"], r["tie_key"], r["tenant"]) for r in rows] == [
        (labelled.id, "ham", "0.25", "acme"), (unlabelled.id, "", "", "")
    ]
    assert json.loads(rows[0]["probabilities"]) == [0.8, 0.2] and rows[0]["certified"] == "True"
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["id"], r["true_label"], r["tie_key"], r["probabilities"]) for r in table] == [
        (labelled.id, "ham", 0.25, [0.8, 0.2]), (unlabelled.id, None, None, [0.8, 0.2])
    ]
    assert table[0]["time"] == labelled.time and table[0]["certified"] is True


def test_close_flushes_and_is_idempotent(url: str) -> None:
    log = DecisionLog(url, flush_interval_s=60)
    log.record([decision() for _ in range(5)])
    log.close()
    log.close()
    assert count_rows(log, "decisions") == 5
    with pytest.raises(DecisionLogError, match="closed"):
        log.record([decision()])


def test_reopening_the_file_sees_earlier_decisions(url: str) -> None:
    first = decision()
    with DecisionLog(url) as log:
        log.record([first])
    with DecisionLog(url) as log:
        assert [r.status for r in log.attach_feedback([(first.id, "spam")], LABELS)] == ["ok"]
        assert log.labelled()[0].decision == first


def test_two_replicas_on_one_file_lose_no_rows(url: str) -> None:
    replicas = [DecisionLog(url, batch_size=7, flush_interval_s=0.001) for _ in range(2)]

    def serve(log: DecisionLog) -> None:
        for _ in range(200):
            log.record([decision()])

    threads = [threading.Thread(target=serve, args=(log,)) for log in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in replicas:
        log.close()
    assert [log.failed_ for log in replicas] == [0, 0]
    assert count_rows(replicas[0], "decisions") == 400


def test_feedback_waits_for_a_decision_another_replica_has_not_written_yet(url: str) -> None:
    with DecisionLog(url, flush_interval_s=0.2) as other, DecisionLog(url) as here:
        made = decision()
        other.record([made])  # enqueued there, written by its writer a moment later
        assert [r.status for r in here.attach_feedback([(made.id, "ham")], LABELS, wait_s=5.0)] == ["ok"]
        assert [r.status for r in here.attach_feedback([("never-logged", "ham")], LABELS, wait_s=0.0)] == [
            "unknown id"]
