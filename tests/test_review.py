"""The review queue: abstained samples kept for people until a label comes back, per tenant, retained."""

from __future__ import annotations

import time
from pathlib import Path

from cascade.decision_log import DecisionLog
from cascade.review import ReviewItem, ReviewQueue
from test_decision_log import LABELS, decision


def test_an_item_waits_until_its_label_comes_back_oldest_first(tmp_path: Path) -> None:
    with DecisionLog(f"sqlite:///{tmp_path / 'log.sqlite'}") as log:
        queue = ReviewQueue(log)
        now = time.time()
        made = [decision(at=now + i, tier="abstained", tenant="shop" if i % 2 else "bank") for i in range(4)]
        log.record(made)
        queue.add([ReviewItem(d.id, d.time, d.tenant, {"text": f"mail {i}"}) for i, d in enumerate(made)])
        queue.add([ReviewItem(made[0].id, made[0].time, "bank", {"text": "changed"})])  # stored once: kept as is
        assert [i.sample["text"] for i in queue.pending()] == ["mail 0", "mail 1", "mail 2", "mail 3"]
        assert [r.status for r in log.attach_feedback([(made[1].id, "ham")], LABELS)] == ["ok"]
        assert [i.decision_id for i in queue.pending()] == [made[0].id, made[2].id, made[3].id]
        assert [i.decision_id for i in queue.pending(tenant="shop")] == [made[3].id]
        assert [i.decision_id for i in queue.pending(after=made[2].time)] == [made[3].id]
        assert [i.decision_id for i in queue.pending(limit=1)] == [made[0].id]
        assert queue.count() == 3 and queue.count(tenant="bank") == 2


def test_items_past_the_logs_retention_leave_the_queue(tmp_path: Path) -> None:
    with DecisionLog(f"sqlite:///{tmp_path / 'log.sqlite'}", retention_days=1) as log:
        queue = ReviewQueue(log)
        queue.add([ReviewItem("old", time.time() - 2 * 86400, None, {"text": "old"}),
                   ReviewItem("new", time.time(), None, {"text": "new"})])
        assert [i.decision_id for i in queue.pending()] == ["new"]
