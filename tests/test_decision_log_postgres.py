"""The decision log on a real PostgreSQL server (the database a cluster's replicas share): what
the SQLite tests specify holds there too, and two replicas writing at once lose nothing.

Each test gets a fresh database on one throwaway server (:mod:`postgres`); a machine without the
server binaries fails these tests with the package to install.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from cascade.decision_log import DecisionLog, DecisionLogError, FeedbackResult
from postgres import PostgresServer, free_port, installed_postgres_server, server_binaries
from test_decision_log import LABELS, count_rows, decision


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with installed_postgres_server() as running:
        yield running


@pytest.fixture
def url(server: PostgresServer) -> str:
    return server.fresh_database("cascade_test")


def test_the_newest_installed_server_is_found_before_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_path = tmp_path / "path"
    for folder in (tmp_path / "9.6" / "bin", tmp_path / "15" / "bin", tmp_path / "13" / "bin", on_path):
        folder.mkdir(parents=True)
        for name in ("initdb", "pg_ctl"):
            (folder / name).touch(mode=0o755)
    monkeypatch.setenv("PATH", str(on_path))
    assert server_binaries(tmp_path) == tmp_path / "15" / "bin"
    assert server_binaries(tmp_path / "absent") == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "absent"))
    assert server_binaries(tmp_path / "absent") is None


@pytest.mark.integration
def test_the_tables_are_postgres_tables(url: str) -> None:
    with DecisionLog(url) as log:
        assert log.engine_.dialect.name == "postgresql"
        assert set(sa.inspect(log.engine_).get_table_names()) == {"decisions", "feedback", "certificates"}


@pytest.mark.integration
def test_recorded_decisions_read_back_equal(url: str) -> None:
    recorded = [
        decision(probabilities=(1 / 3, 2 / 3), deferral_score=1 / 3, threshold=0.1 + 0.2, tie_key=2 ** -40),
        decision(probabilities=(0.05, 0.15, 0.8), deferral_score=None, tie_key=None, tier="abstained",
                 certificate_id=None, tenant=None, degraded=True, forced=True, certified=False),
        decision(tier="expert", label="ham", deferred=True, content_hash="sha256:" + "é" * 8),
    ]  # fmt: skip
    with DecisionLog(url) as log:
        log.record(recorded)
        assert log.decisions() == sorted(recorded, key=lambda d: (d.time, d.id))
    with DecisionLog(url) as reopened:
        read = {d.id: d for d in reopened.decisions()}
    assert [read[d.id] for d in recorded] == recorded
    assert read[recorded[1].id].tenant is None and read[recorded[1].id].degraded is True


@pytest.mark.integration
def test_feedback_reports_each_outcome_per_item(url: str) -> None:
    a, b = decision(), decision()
    with DecisionLog(url) as log:
        log.record([a, b])  # not flushed: attach_feedback must see them
        items = [(a.id, "ham"), ("unknown", "ham"), (b.id, "eggs"), (a.id, "ham"), (a.id, "spam")]
        assert log.attach_feedback(items, LABELS) == [
            FeedbackResult(a.id, "ok"), FeedbackResult("unknown", "unknown id"), FeedbackResult(b.id, "bad label"),
            FeedbackResult(a.id, "duplicate"), FeedbackResult(a.id, "conflict"),
        ]  # fmt: skip
    with DecisionLog(url) as other_replica:
        assert [r.status for r in other_replica.attach_feedback([(a.id, "ham"), (a.id, "spam")], LABELS)] == [
            "duplicate", "conflict"]  # fmt: skip
        assert [(x.decision, x.true_label) for x in other_replica.labelled()] == [(a, "ham")]
        assert count_rows(other_replica, "feedback") == 1


@pytest.mark.integration
def test_two_replicas_writing_at_once_lose_nothing(url: str) -> None:
    replicas = [DecisionLog(url, batch_size=7, flush_interval_s=0.001) for _ in range(2)]
    recorded: list[list[str]] = [[], []]

    def serve(index: int) -> None:
        for _ in range(300):
            made = decision()
            replicas[index].record([made])
            recorded[index].append(made.id)

    threads = [threading.Thread(target=serve, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in replicas:
        log.flush()
    seen_by_each = [{d.id for d in log.decisions()} for log in replicas]
    for log in replicas:
        log.close()
    assert [log.failed_ for log in replicas] == [0, 0] and [log.dropped_ for log in replicas] == [0, 0]
    assert seen_by_each[0] == seen_by_each[1] == set(recorded[0]) | set(recorded[1])
    assert count_rows(replicas[0], "decisions") == 600


@pytest.mark.integration
def test_decisions_reads_a_half_open_time_window_and_one_certificate(url: str) -> None:
    now = time.time()
    made = [decision(at=now + i, certificate_id="cert-1" if i % 2 else "cert-2") for i in range(6)]
    with DecisionLog(url) as log:
        log.record(made)
        assert log.decisions(after=now + 1, until=now + 4) == made[2:5]
        assert log.decisions(after=now + 3) == made[4:]
        assert log.decisions(until=now + 1) == made[:2]
        assert log.decisions(certificate_id="cert-1") == made[1::2]
        assert log.decisions(after=now, until=now + 4, certificate_id="cert-2") == [made[2], made[4]]
        assert log.decisions(certificate_id="cert-3") == []


@pytest.mark.integration
def test_labelled_filters_by_label_arrival_certificate_and_decision_time(url: str) -> None:
    now = time.time()
    early, late, other = decision(at=now - 10), decision(at=now), decision(at=now, certificate_id="cert-2")
    with DecisionLog(url) as log:
        log.record([early, late, other])
        log.attach_feedback([(early.id, "ham")], LABELS)
        checkpoint = log.labelled()[-1].received
        time.sleep(0.01)
        log.attach_feedback([(late.id, "spam"), (other.id, "ham")], LABELS)
        everything = log.labelled()
        assert [(x.decision, x.true_label) for x in everything[:1]] == [(early, "ham")]
        assert {(x.decision.id, x.true_label) for x in everything[1:]} == {(late.id, "spam"), (other.id, "ham")}
        assert {x.decision.id for x in log.labelled(since=checkpoint)} == {late.id, other.id}
        assert [x.decision.id for x in log.labelled(certificate_id="cert-1")] == [early.id, late.id]
        assert {x.decision.id for x in log.labelled(logged_after=now - 5)} == {late.id, other.id}
        assert [x.decision.id for x in log.labelled(since=checkpoint, certificate_id="cert-1",
                                                    logged_after=now - 5)] == [late.id]  # fmt: skip
        assert all(x.received > checkpoint for x in log.labelled(since=checkpoint))


@pytest.mark.integration
def test_retention_by_max_rows_keeps_the_newest_with_their_feedback(url: str) -> None:
    now = time.time()
    decisions = [decision(at=now - 100 + i) for i in range(10)]
    with DecisionLog(url, retention_days=None) as log:
        log.record(decisions)
        log.attach_feedback([(d.id, "spam") for d in decisions], LABELS)
        log.max_rows = 4
        log.record([decision(at=now)])  # the writer prunes after each batch
        log.flush()
        assert {x.decision.id for x in log.labelled()} == {d.id for d in decisions[-3:]}
        assert count_rows(log, "decisions") == 4 and count_rows(log, "feedback") == 3
        assert log.prune() == 0


@pytest.mark.integration
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


@pytest.mark.integration
def test_a_certificate_is_recorded_once_and_read_back(url: str) -> None:
    first = {"threshold": 0.42, "n": 600, "statement": "P(defer rate ≤ 0.2) ≥ 0.95"}
    with DecisionLog(url) as log:
        assert log.record_certificate("cert-1", first, "tuned") is True
        assert log.record_certificate("cert-1", {"threshold": 0.9}, "again") is False
        time.sleep(0.01)
        assert log.record_certificate("cert-2", {"threshold": 0.5}, "budget changed") is True
    with DecisionLog(url) as other_replica:
        assert other_replica.record_certificate("cert-1", {"threshold": 0.1}, "replica start") is False
        recorded = other_replica.certificates()
    assert [(c["id"], c["reason"], c["certificate"]) for c in recorded] == [
        ("cert-1", "tuned", first), ("cert-2", "budget changed", {"threshold": 0.5})]
    assert recorded[0]["time"] < recorded[1]["time"]


@pytest.mark.integration
def test_export_csv_and_parquet_round_trip(url: str, tmp_path: Path) -> None:
    now = time.time()
    labelled, unlabelled = decision(at=now - 1), decision(at=now, tie_key=None, tenant=None, probabilities=(0.3, 0.7))
    with DecisionLog(url) as log:
        log.record([labelled, unlabelled])
        log.attach_feedback([(labelled.id, "ham")], LABELS)
        received = log.labelled()[0].received
        assert log.export(tmp_path / "out.csv", "csv") == 2
        assert log.export(tmp_path / "out.parquet", "parquet") == 2
    with (tmp_path / "out.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["id"], r["true_label"], r["tie_key"], r["tenant"]) for r in rows] == [
        (labelled.id, "ham", "0.25", "acme"), (unlabelled.id, "", "", "")
    ]
    assert [json.loads(r["probabilities"]) for r in rows] == [[0.8, 0.2], [0.3, 0.7]]
    assert float(rows[0]["time"]) == labelled.time and float(rows[0]["received"]) == received
    assert rows[0]["certified"] == "True" and rows[1]["received"] == ""
    table = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [(r["id"], r["true_label"], r["tie_key"], r["probabilities"]) for r in table] == [
        (labelled.id, "ham", 0.25, [0.8, 0.2]), (unlabelled.id, None, None, [0.3, 0.7])
    ]
    assert table[0]["time"] == labelled.time and table[0]["received"] == received and table[0]["certified"] is True


def test_an_unreachable_server_fails_at_construction_without_the_password() -> None:
    with pytest.raises(DecisionLogError, match=r"postgres:\*\*\*@127\.0\.0\.1") as error:
        DecisionLog(f"postgresql+psycopg://postgres:secret@127.0.0.1:{free_port()}/cascade_test")
    assert "secret" not in str(error.value)


def _together(count: int, work) -> list[object]:  # type: ignore[no-untyped-def]
    """Run ``work(i)`` in ``count`` threads released at once; their results (or exceptions), in order."""
    start, results = threading.Barrier(count), [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - reported to the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.integration
def test_replicas_starting_together_on_a_new_database_all_open_it(url: str) -> None:
    logs = _together(4, lambda i: DecisionLog(url))
    assert all(isinstance(log, DecisionLog) for log in logs), logs
    for log in logs:
        log.close()  # type: ignore[union-attr]


@pytest.mark.integration
def test_the_same_label_sent_to_two_replicas_at_once_is_attached_once(url: str) -> None:
    with DecisionLog(url) as first, DecisionLog(url) as second:
        shared, own = decision(), [decision(), decision()]
        first.record([shared, *own])
        first.flush()
        replicas = (first, second)
        outcomes = _together(2, lambda i: replicas[i].attach_feedback(
            [(shared.id, "ham" if i == 0 else "spam"), (own[i].id, "ham")], LABELS))
        assert not any(isinstance(o, Exception) for o in outcomes), outcomes
        statuses = sorted(o[0].status for o in outcomes)  # type: ignore[index]
        assert statuses == ["conflict", "ok"]
        assert [o[1].status for o in outcomes] == ["ok", "ok"]  # type: ignore[index]
        assert count_rows(first, "feedback") == 3


@pytest.mark.integration
def test_a_certificate_recorded_by_two_replicas_at_once_is_kept_once(url: str) -> None:
    with DecisionLog(url) as first, DecisionLog(url) as second:
        replicas = (first, second)
        outcomes = _together(2, lambda i: replicas[i].record_certificate("c-1", {"n": 1}, f"replica {i}"))
        assert sorted(outcomes) == [False, True], outcomes  # type: ignore[type-var]
        assert [c["id"] for c in first.certificates()] == ["c-1"]
