"""Tenants in the real Ray Serve app: two router replicas, two tenants with caps of their own and an
app-wide cap; every cap holds over both replicas under a burst, each tenant reads its own budget, and
a restarted holder keeps each tenant's window. Expert: the real knn-vote expert (no LLM)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cascade.config import CascadeConfig
from serving import AUTHORIZED, CONTROL_TOKEN, cascade_config, free_port, served_app, \
    spam_kept_and_deferred, tune_artifact
from test_serve_budget_integration import _settled_budget

pytestmark = pytest.mark.integration

TOKENS = {"shop": "integration-shop", "bank": "integration-bank"}
WINDOW, SHOP_CAP, BANK_CAP, APP_CAP, LEASE = 100, 0.3, 0.1, 0.2, 4


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> CascadeConfig:
    artifact = tmp_path_factory.mktemp("artifact") / "spam"
    tune_artifact(artifact)
    secrets = tmp_path_factory.mktemp("secrets")
    for name, token in {**TOKENS, "control": CONTROL_TOKEN}.items():
        (secrets / name).write_text(token)
    tenants = [{"name": "shop", "token_file": str(secrets / "shop"), "target": SHOP_CAP, "hard_cap": SHOP_CAP},
               {"name": "bank", "token_file": str(secrets / "bank"), "target": BANK_CAP, "hard_cap": BANK_CAP}]
    return cascade_config(
        artifact, budget={"target": 0.1, "hard_cap": 0.5, "window": WINDOW, "learning_rate": 1e-9},
        serve={"port": free_port(), "router_replicas": 2, "router_num_cpus": 0.1, "expert_num_cpus": 0.1,
               "control": {"token_file": str(secrets / "control")}, "tenants": tenants, "app_hard_cap": APP_CAP,
               "shared_budget": {"lease_deferrals": LEASE, "lease_ttl_s": 2.0}, "monitor": {"enabled": False}})


@pytest.fixture(scope="module")
def url(config: CascadeConfig) -> Iterator[str]:
    with served_app(config) as app_url:
        yield app_url


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60.0, headers={"Authorization": f"Bearer {token}"})


def test_each_tenants_cap_and_the_app_cap_hold_over_both_replicas_and_survive_a_holder_restart(
        url: str, config: CascadeConfig, spamassassin: Any) -> None:
    deferred = spam_kept_and_deferred(config, spamassassin)[1]
    shop, bank = client(url, TOKENS["shop"]), client(url, TOKENS["bank"])
    assert httpx.post(f"{url}/v1/detect", json={"samples": [{"text": deferred[0]}]}).status_code == 401

    def send(i: int) -> tuple[str, Any]:
        tenant, http = ("shop", shop) if i % 2 else ("bank", bank)
        return tenant, http.post("/v1/detect", json={"samples": [{"text": deferred[i % len(deferred)]}]})

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, range(2 * WINDOW)))
    assert all(r.status_code == 200 for _, r in answers)
    by_expert = {t: sum(r.json()["answered_by"]["expert"] for u, r in answers if u == t) for t in TOKENS}
    assert by_expert["bank"] <= BANK_CAP * WINDOW and by_expert["shop"] <= SHOP_CAP * WINDOW
    assert sum(by_expert.values()) <= APP_CAP * 2 * WINDOW  # the app's window holds both tenants' requests
    shop_budget, bank_budget = _settled_budget(shop), _settled_budget(bank)
    assert (shop_budget["tenant"], bank_budget["tenant"]) == ("shop", "bank")
    assert shop_budget["observed"] == bank_budget["observed"] == WINDOW
    assert bank_budget["app_cap"]["hard_cap"] == APP_CAP and bank_budget["replicas"] == 2
    assert bank_budget["forced_total"] == WINDOW - by_expert["bank"]

    import ray

    replica = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                   if "BudgetHolder" in a["name"] and a["name"].startswith("SERVE_REPLICA"))
    ray.kill(ray.get_actor(replica["name"], namespace=replica["namespace"]), no_restart=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            again = shop.get("/v1/budget")
            if again.status_code == 200 and again.json().get("resumed"):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    after = {name: _settled_budget(http) for name, http in (("shop", shop), ("bank", bank))}
    assert after["shop"]["resumed"] and after["shop"]["observed"] == WINDOW
    assert after["bank"]["forced_total"] == bank_budget["forced_total"]
    admin = httpx.get(f"{url}/v1/budget", params={"tenant": "bank"}, headers=AUTHORIZED).json()
    assert admin["tenant"] == "bank" and admin["forced_total"] == bank_budget["forced_total"]
