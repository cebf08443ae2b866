"""``cascade.client`` over real HTTP against the router's FastAPI app served by uvicorn on 127.0.0.1
(the app, artifact and expert come from ``conftest.py`` and ``serving.py``)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from cascade.client import CascadeClient, CascadeError, detect_cli
from cascade.config import CascadeConfig
from cascade.types import Sample
from serving import CONTROL_TOKEN, KeptDeferred, Tiers, in_process_app


@pytest.fixture
def url(config: CascadeConfig, knn_expert: Any, tiers: Tiers) -> Iterator[str]:
    """A fresh app (fresh controller) listening on a free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(in_process_app(config, knn_expert, tiers), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


@pytest.fixture
def client(url: str) -> Iterator[CascadeClient]:
    with CascadeClient(url, token=CONTROL_TOKEN) as client:
        yield client


def test_detect_takes_one_text_and_returns_one_verdict(client: CascadeClient) -> None:
    verdicts = client.detect("Lunch at noon? Bring the slides.")
    assert len(verdicts) == 1 and verdicts[0].label in ("ham", "spam")


def test_detect_takes_texts_dicts_and_samples_in_order(client: CascadeClient) -> None:
    verdicts = client.detect(["first mail", {"id": "b", "text": "second mail"}, Sample(id="c", text="third mail")])
    assert [v.id for v in verdicts] == [None, "b", "c"]


def test_detect_full_reports_the_answering_tier(client: CascadeClient,
                                                kept_and_deferred: KeptDeferred) -> None:
    detection = client.detect_full(kept_and_deferred[1][:1])
    assert detection.tier == "expert" and detection.answered_by == {"small": 0, "expert": 1}


def test_a_refused_request_raises_with_status_and_message(client: CascadeClient) -> None:
    with pytest.raises(CascadeError, match="HTTP 422 invalid_request: samples.0.text") as caught:
        client.detect("   ")
    assert caught.value.status == 422


def test_set_budget_changes_the_target_and_keeps_the_configured_hard_cap(client: CascadeClient) -> None:
    changed = client.set_budget(0.4)
    assert changed.target == 0.4 and changed.hard_cap == 0.5
    assert client.budget().target == 0.4


def test_set_budget_without_the_token_is_refused_and_changes_nothing(url: str, client: CascadeClient) -> None:
    with CascadeClient(url, token="not-the-token") as stranger:
        with pytest.raises(CascadeError, match="HTTP 401") as caught:
            stranger.set_budget(0.4)
    assert caught.value.status == 401 and client.budget().target == 0.2


def test_the_token_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADE_API_TOKEN", CONTROL_TOKEN)
    with CascadeClient(url) as client:
        assert client.set_budget(0.3).target == 0.3


def test_readiness_reports_each_tier(client: CascadeClient) -> None:
    assert client.readiness() == {"status": "ready", "small": "up", "expert": "up", "breaker": "closed",
                                  "expert_consecutive_failures": 0}


def test_explain_returns_the_experts_answer(client: CascadeClient,
                                            kept_and_deferred: KeptDeferred) -> None:
    verdict = client.detect(kept_and_deferred[1][0])[0]
    answer = client.explain(kept_and_deferred[1][0], verdict=verdict)
    assert answer["degraded"] is False and answer["answer"]


def test_detect_cli_prints_one_json_verdict_per_line_in_chunks(url: str, tmp_path: Path) -> None:
    mails = tmp_path / "mails.txt"
    mails.write_text("".join(f"mail number {i}\n" for i in range(11)) + "\n")
    out = io.StringIO()
    verdicts = detect_cli(url, ["one more"], file=mails, out=out)
    assert len(verdicts) == 12 and len(out.getvalue().splitlines()) == 12


def test_detect_cli_with_nothing_to_send_says_so() -> None:
    with pytest.raises(ValueError, match="nothing to detect"):
        detect_cli("http://127.0.0.1:8000", [])
