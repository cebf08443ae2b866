"""Load test a running cascade on this machine: N concurrent clients for T seconds, one sample each.

Bounded by design: loopback URLs only, at most ``MAX_CLIENTS`` clients, ``MAX_SECONDS`` seconds and
``max_requests`` requests. Every request counts exactly once as answered (2xx), an error (any
other status) or lost (no response at all: connection error or client timeout). Latencies are
grouped per path, i.e. the tier that answered (``X-Cascade-Tier``), with degraded answers apart.
With ``retry`` a client sends a request again as :class:`~cascade.client.CascadeClient` does
(:func:`~cascade.client.retry_delay`), up to ``MAX_RETRIES`` times: after a 503's ``Retry-After``
(counted in ``retried_503``), or after a short back-off for a 5xx that is not the app's (Serve's
proxy answers a plain 500 when the router replica holding the request died; ``retried_no_answer``).
Its latency includes the waits; ``statuses`` count final answers only.

    python experiments/benchmarks/load_test.py --url http://127.0.0.1:8000 --clients 8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np

from cascade.client import retry_delay

MAX_CLIENTS = 64
MAX_SECONDS = 300.0
MAX_RETRIES = 10
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class LoadReport:
    """What a load run saw: per-path latency percentiles, throughput, errors and lost requests."""

    clients: int
    seconds: float
    sent: int = 0
    errors: int = 0
    lost: int = 0
    retried_503: int = 0
    retried_no_answer: int = 0
    answered_at: list[tuple[float, float, str]] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def record(self, path: str, latency_ms: float, sent_s: float) -> None:
        """An answered request: its path, latency, and when it was sent (seconds into the run)."""
        self.latencies_ms.setdefault(path, []).append(latency_ms)
        self.answered_at.append((sent_s, latency_ms, path))

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: totals, throughput and p50/p95/p99 per path."""
        answered = sum(len(v) for v in self.latencies_ms.values())
        every = [latency for values in self.latencies_ms.values() for latency in values]
        paths = {
            path: {"requests": len(values), "throughput_rps": len(values) / self.seconds,
                   **{f"p{q}_ms": float(np.percentile(values, q)) for q in (50, 95, 99)}}
            for path, values in sorted(self.latencies_ms.items())
        }
        return {"clients": self.clients, "seconds": self.seconds, "sent": self.sent, "answered": answered,
                "errors": self.errors, "lost": self.lost, "retried_503": self.retried_503,
                "retried_no_answer": self.retried_no_answer,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "throughput_rps": answered / self.seconds,
                **{f"p{q}_ms": float(np.percentile(every, q)) if every else None for q in (50, 95, 99)},
                "paths": paths, "error_samples": self.error_samples[:5]}


def check_loopback(url: str) -> None:
    """Refuse any URL that leaves this machine."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise ValueError(f"load tests run against this machine only ({', '.join(LOOPBACK)}); got host '{host}'")


async def run_load(url: str, texts: Sequence[str], clients: int = 8, seconds: float = 20.0,
                   max_requests: int = 100_000, timeout_s: float = 60.0, retry: bool = False) -> LoadReport:
    """``clients`` concurrent loops, each posting one text at a time to ``/v1/detect`` for ``seconds``.

    Texts are taken in turn from ``texts``; pass a mix (e.g. confident and uncertain samples) to
    load both paths.
    """
    check_loopback(url)
    if not 1 <= clients <= MAX_CLIENTS:
        raise ValueError(f"clients must be in [1, {MAX_CLIENTS}], got {clients}")
    if not 0 < seconds <= MAX_SECONDS:
        raise ValueError(f"seconds must be in (0, {MAX_SECONDS:g}], got {seconds}")
    if not texts:
        raise ValueError("need at least one text to send")
    report = LoadReport(clients=clients, seconds=seconds)
    order = itertools.cycle(range(len(texts)))
    begun = time.perf_counter()
    deadline = begun + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline and report.sent < max_requests:
            report.sent += 1
            body = {"samples": [{"text": texts[next(order)]}]}
            started = time.perf_counter()
            try:
                response = await http.post("/v1/detect", json=body)
                for _ in range(MAX_RETRIES if retry else 0):
                    delay = retry_delay(response)
                    if delay is None:
                        break
                    if response.status_code == 503:
                        report.retried_503 += 1
                    else:
                        report.retried_no_answer += 1
                    await asyncio.sleep(delay)
                    response = await http.post("/v1/detect", json=body)
            except httpx.HTTPError as exc:
                report.lost += 1
                report.error_samples.append(f"lost: {type(exc).__name__}: {exc}")
                continue
            report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
            latency_ms = (time.perf_counter() - started) * 1000.0
            if response.status_code != 200:
                report.errors += 1
                report.error_samples.append(f"HTTP {response.status_code}: {response.text[:200]}")
                continue
            degraded = response.headers.get("x-cascade-degraded", "0") != "0"
            report.record("degraded" if degraded else response.headers.get("x-cascade-tier", "unknown"), latency_ms,
                          started - begun)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
        report.seconds = time.perf_counter() - begun
    return report


def _spam_texts(count: int) -> list[str]:
    from cascade import data

    data.fetch("spamassassin", progress=False)
    test = data.load("spamassassin", split="test", seed=0)
    return list(test.texts or [])[:count]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--texts", help="file with one text per line (default: SpamAssassin test mails)")
    parser.add_argument("--count", type=int, default=500, help="how many default test mails to cycle through")
    args = parser.parse_args(argv)
    if args.texts:
        with open(args.texts, encoding="utf-8") as handle:
            texts = [line.rstrip("\n") for line in handle if line.strip()]
    else:
        texts = _spam_texts(args.count)
    report = asyncio.run(run_load(args.url, texts, args.clients, args.seconds, args.max_requests))
    print(json.dumps(report.summary(), indent=2))


if __name__ == "__main__":
    main()
