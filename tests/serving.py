"""Helpers shared by the serving tests: the tuned SpamAssassin config, the in-process app, bad inputs."""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig
from deployments.served import ServedPolicy, load_served
from deployments.budgets import LocalBudget
from deployments.control import ControlAccess
from deployments.http import build_http_app
from deployments.contracts import ServiceSettings
from deployments.service import CascadeService

LIMITS = {"max_samples_per_request": 8, "max_text_chars": 2000, "max_features": 16}
Tiers = tuple[ServedPolicy, Any]  # the router's share of the artifact, and the small tier
KeptDeferred = tuple[list[str], list[str]]  # texts kept by the small tier, texts deferred
CONTROL_TOKEN = "test-control-token"
AUTHORIZED = {"Authorization": f"Bearer {CONTROL_TOKEN}"}


def cascade_config(artifact_dir: Path, **overrides: Any) -> CascadeConfig:
    """SpamAssassin, a few-label TF-IDF detector, confidence policy at a 20% rate, hard cap 50%."""
    raw: dict[str, Any] = {
        "name": "serve-test",
        "artifact_dir": str(artifact_dir),
        "dataset": {"name": "spamassassin", "max_samples": 1500, "label_budget": 100},
        "detector": {"kind": "tfidf-lr"},
        "calibrator": {"kind": "platt"},
        "policy": {"kind": "confidence"},
        "budget": {"kind": "rate", "target": 0.2, "hard_cap": 0.5, "window": 200, "learning_rate": 0.05},
        "expert": {"kind": "knn-vote", "shots": 4, "labels": ["ham", "spam"]},
        "cost": {"small_per_call": 0.001, "expert_per_call": 1.0},
        "serve": {**LIMITS, "expert_timeout_s": 20.0,  # a log of its own: never another test's (or run's) decisions
                  "decision_log": {"url": f"sqlite:///{Path(artifact_dir).parent / 'decisions.sqlite'}"}},
    }
    for section, values in overrides.items():
        if section == "budget" and "kind" in values:
            raw[section] = values  # another kind: its own fields only
            continue
        raw[section] = {**raw.get(section, {}), **values} if isinstance(values, dict) else values
    return CascadeConfig.model_validate(raw)


def tune_artifact(artifact_dir: Path) -> CascadeConfig:
    """Fit the small tier and tune the threshold with ``cascade tune``'s code; return the config."""
    from policies.tune import tune

    config = cascade_config(artifact_dir)
    tune(config, progress=False)
    return config


def split_by_score(tiers: Tiers, texts: list[str]) -> KeptDeferred:
    """Texts the fitted policy keeps (most confident first) and defers (most uncertain first)
    at its starting threshold."""
    from policies.ties import canonical

    served, small = tiers
    scores = canonical(served.policy.score(small.features(texts)))
    order = np.argsort(scores)
    return ([texts[i] for i in order if scores[i] <= served.threshold],
            [texts[i] for i in order[::-1] if scores[i] > served.threshold])


def load_tiers(config: CascadeConfig) -> Tiers:
    """The router's share of the artifact and the small tier, as the app loads them."""
    from cascade.small import SmallTier

    served = load_served(config)
    return served, SmallTier.load(served.small_dir)


def in_process_app(config: CascadeConfig, expert: Any, tiers: Tiers, **service_options: Any) -> FastAPI:
    """The router's FastAPI app (with a fresh controller) with the small tier and ``expert`` in this
    process; changes need the bearer token ``CONTROL_TOKEN``."""
    return build_http_app(in_process_service(config, expert, tiers, **service_options), config.serve,
                          ControlAccess.from_token(CONTROL_TOKEN))


def in_process_service(config: CascadeConfig, expert: Any, tiers: Tiers, small_tier: Any = None,
                       **options: Any) -> CascadeService:
    """The router's service with the small tier (``small_tier``, default: the fitted one in this process) and
    ``expert`` (``options``: expert probe, breaker)."""
    from deployments.detector import LocalSmallTier

    served, small = tiers
    small_tier = LocalSmallTier(small) if small_tier is None else small_tier
    options.setdefault("controller", LocalBudget(served.controller(config)))
    return CascadeService(ServiceSettings.from_config(config, served), small=small_tier, expert=expert,
                          policy=served.policy, cost=config.cost, **options)


def client(app: FastAPI) -> TestClient:
    """A test client that sends the control token."""
    return TestClient(app, headers=AUTHORIZED)


def share_after_target(http: Any, texts: list[str], target: float, settled: Callable[[float], bool],
                       rounds: int = 40) -> float:
    """Set the budget target, then send batches of 8 until the expert's share of the last 3 batches
    is ``settled`` (or ``rounds`` batches have gone); return that share."""
    assert http.put("/v1/budget", json={"target": target}).json()["target"] == target
    recent: deque[int] = deque(maxlen=3)
    for i in range(rounds):
        batch = [texts[(8 * i + j) % len(texts)] for j in range(8)]
        recent.append(detect(http, batch).json()["answered_by"]["expert"])
        if len(recent) == 3 and settled(sum(recent) / 24):
            break
    return sum(recent) / 24


def free_port() -> int:
    """A loopback port nobody listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



def detect(api: Any, texts: list[str], prefix: str = "", **body: Any) -> Any:
    """POST the texts to ``{prefix}/v1/detect`` (test client or httpx client); check it answered 200."""
    response = api.post(f"{prefix}/v1/detect", json={"samples": [{"text": t} for t in texts], **body})
    assert response.status_code == 200, response.text
    return response


def _json(body: Any) -> dict[str, Any]:
    return {"json": body}


def _raw(body: str, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


DETECT, BUDGET, EXPLAIN = ("POST", "/v1/detect"), ("PUT", "/v1/budget"), ("POST", "/v1/explain")
OK = {"text": "Meeting moved to 3pm"}
# (name, method, path, request keyword arguments, status, text the message must contain), for an app
# with LIMITS (8 samples, 2000 characters, 16 features) serving text, with a hard cap of 0.5.
BAD_INPUTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("malformed JSON", *DETECT, _raw('{"samples": ['), 400, "not valid JSON"),
    ("empty body", *DETECT, _raw(""), 400, "JSON object body"),
    ("not JSON", *DETECT, _raw("hello", "text/plain"), 415, "application/json"),
    ("top-level array", *DETECT, _json([OK]), 422, "<body>"),
    ("top-level string", *DETECT, _json("spam"), 422, "<body>"),
    ("no samples field", *DETECT, _json({}), 422, "samples: Field required"),
    ("empty sample list", *DETECT, _json({"samples": []}), 422, "samples: List should have at least 1"),
    ("samples not a list", *DETECT, _json({"samples": "spam"}), 422, "samples"),
    ("sample not an object", *DETECT, _json({"samples": [5]}), 422, "samples.0"),
    ("unknown top-level field", *DETECT, _json({"samples": [OK], "priority": 1}), 422, "priority"),
    ("unknown sample field", *DETECT, _json({"samples": [{**OK, "lang": "en"}]}), 422, "samples.0.lang"),
    ("text not a string", *DETECT, _json({"samples": [{"text": 42}]}), 422, "samples.0.text"),
    ("empty text", *DETECT, _json({"samples": [{"text": ""}]}), 422, "samples.0.text"),
    ("whitespace text", *DETECT, _json({"samples": [{"text": " \n\t"}]}), 422, "only whitespace"),
    ("text too long", *DETECT, _json({"samples": [{"text": "a" * 2001}]}), 413, "samples.0.text"),
    ("too many samples", *DETECT, _json({"samples": [OK] * 9}), 413, "samples: List should have at most 8"),
    ("feature not a number", *DETECT, _json({"samples": [{"features": ["high"]}]}), 422, "samples.0.features.0"),
    ("too many features", *DETECT, _json({"samples": [{"features": [0.5] * 17}]}), 413, "samples.0.features"),
    ("features to a text cascade", *DETECT, _json({"samples": [{"features": [0.1]}]}), 422, "serves text samples"),
    ("image to a text cascade", *DETECT, _json({"samples": [{"image_ref": "a.png"}]}), 422, "samples.0.image_ref"),
    ("text and features", *DETECT, _json({"samples": [{**OK, "features": [0.1]}]}), 422, "exactly one"),
    ("no payload", *DETECT, _json({"samples": [{"id": "m1"}]}), 422, "exactly one"),
    ("id too long", *DETECT, _json({"samples": [{**OK, "id": "x" * 300}]}), 413, "samples.0.id"),
    ("rationale not a bool", *DETECT, _json({"samples": [OK], "rationale": "maybe"}), 422, "rationale"),
    ("metadata is not a sample field", *DETECT, _json({"samples": [{**OK, "metadata": {"a": 1}}]}), 422, "samples.0.metadata"),
    ("body over the byte limit", *DETECT, _raw("x" * 300_000), 413, "over the limit"),
    ("budget target above 1", *BUDGET, _json({"target": 1.5}), 422, "target"),
    ("budget target negative", *BUDGET, _json({"target": -0.1}), 422, "target"),
    ("budget target not a number", *BUDGET, _json({"target": "high"}), 422, "target"),
    ("budget unknown field", *BUDGET, _json({"target": 0.1, "window": 5}), 422, "window"),
    ("budget target above the hard cap", *BUDGET, _json({"target": 0.8}), 422, "hard cap"),
    ("explain without a sample", *EXPLAIN, _json({"question": "why?"}), 422, "sample"),
    ("explain empty question", *EXPLAIN, _json({"sample": OK, "question": ""}), 422, "question"),
    ("explain history bad role", *EXPLAIN, _json({"sample": OK, "history": [{"role": "bot", "content": "hi"}]}),
     422, "history.0.role"),
    ("wrong method", "GET", "/v1/detect", {}, 405, "GET /v1/detect"),
    ("unknown path", "POST", "/v1/classify", _json({"samples": [OK]}), 404, "/v1/classify"),
]


@contextmanager
def served_app(config: CascadeConfig, **ray_options: Any) -> Iterator[str]:
    """The real Serve app for ``config`` on a fresh local Ray; yields its URL, shuts both down after."""
    import ray
    from ray import serve

    from deployments.app import init_ray, run

    init_ray(num_cpus=2, **ray_options)
    try:
        yield run(config)
    finally:
        serve.shutdown()
        ray.shutdown()


def spam_kept_and_deferred(config: CascadeConfig, spamassassin: Any) -> KeptDeferred:
    """200 SpamAssassin texts (a fixed stride through the data) split by the small tier's decision."""
    texts = [spamassassin.texts[i][:2000] for i in range(7, len(spamassassin), 23)][:200]
    return split_by_score(load_tiers(config), texts)
