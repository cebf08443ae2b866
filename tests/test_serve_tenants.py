"""Tenants through the real HTTP app (in-process, real artifact, real knn-vote expert): a token picks the
tenant, each tenant decides with its own budget, GET/PUT /v1/budget per tenant, unknown tokens refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cascade.config import CascadeConfig, ConfigError
from cascade.decision_log import DecisionLog
from deployments.budgets import LocalBudget
from deployments.control import ControlAccess, TenantAccess
from deployments.http import build_http_app
from deployments.served import tenant_config
from serving import AUTHORIZED, CONTROL_TOKEN, KeptDeferred, Tiers, in_process_service

TOKENS = {"shop": "token-shop", "bank": "token-bank"}


def as_tenant(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def tenanted(config: CascadeConfig) -> CascadeConfig:
    """The shop may defer half its traffic; the bank is capped at 1 deferral in 4 requests."""
    tenants = [{"name": "shop", "token_env": "SHOP_TOKEN", "target": 0.5, "hard_cap": 0.5},
               {"name": "bank", "token_env": "BANK_TOKEN", "target": 0.2, "hard_cap": 0.25, "window": 4}]
    return CascadeConfig.model_validate({**config.model_dump(mode="json"),
                                         "serve": {**config.serve.model_dump(mode="json"), "tenants": tenants}})


def app_for(config: CascadeConfig, expert: Any, tiers: Tiers, log: DecisionLog | None = None) -> TestClient:
    served, _ = tiers
    budgets = {t.name: LocalBudget(served.controller(tenant_config(config, t.name))) for t in config.serve.tenants}
    service = in_process_service(config, expert, tiers, decision_log=log, controller=budgets)
    return TestClient(build_http_app(service, config.serve, ControlAccess.from_token(CONTROL_TOKEN),
                                     tenants=TenantAccess.from_tokens(TOKENS)))


def test_detect_needs_a_tenants_token_and_each_tenant_decides_with_its_own_budget(
        tenanted: CascadeConfig, knn_expert: Any, tiers: Tiers, kept_and_deferred: KeptDeferred,
        tmp_path: Path) -> None:
    _, deferred = kept_and_deferred
    with DecisionLog(f"sqlite:///{tmp_path / 'log.sqlite'}") as log:
        api = app_for(tenanted, knn_expert, tiers, log)
        body = {"samples": [{"text": t} for t in deferred[:4]]}
        assert api.post("/v1/detect", json=body).status_code == 401
        assert api.post("/v1/detect", json=body, headers={"Authorization": "Bearer guess"}).status_code == 401
        assert api.post("/v1/detect", json=body, headers=AUTHORIZED).status_code == 401  # control is no tenant
        shop = api.post("/v1/detect", json=body, headers=as_tenant("shop")).json()["verdicts"]
        bank = api.post("/v1/detect", json=body, headers=as_tenant("bank")).json()["verdicts"]
        assert [v["forced"] for v in shop] == [False] * 4  # the shop's cap leaves room
        assert sum(v["source"] == "expert" for v in bank) == 1 and sum(v["forced"] for v in bank) == 3
        tenants = {d.id: d.tenant for d in log.decisions()}
        assert {tenants[v["decision_id"]] for v in shop} == {"shop"}
        assert {tenants[v["decision_id"]] for v in bank} == {"bank"}


def test_each_tenant_reads_its_own_budget_and_the_control_token_reads_and_changes_any(
        tenanted: CascadeConfig, knn_expert: Any, tiers: Tiers) -> None:
    api = app_for(tenanted, knn_expert, tiers)
    shop = api.get("/v1/budget", headers=as_tenant("shop")).json()
    assert (shop["tenant"], shop["target"], shop["hard_cap"]) == ("shop", 0.5, 0.5)
    bank = api.get("/v1/budget", params={"tenant": "bank"}, headers=AUTHORIZED).json()
    assert (bank["tenant"], bank["hard_cap"], bank["window"]) == ("bank", 0.25, 4)
    assert api.get("/v1/budget").status_code == 401
    missing = api.get("/v1/budget", params={"tenant": "nobody"}, headers=AUTHORIZED)
    assert missing.status_code == 404 and "nobody" in missing.json()["message"]
    changed = api.put("/v1/budget", json={"target": 0.3, "tenant": "shop"}, headers=AUTHORIZED)
    assert changed.status_code == 200 and changed.json()["target"] == 0.3
    assert api.get("/v1/budget", headers=as_tenant("bank")).json()["target"] == 0.2  # the bank's is unchanged
    assert api.put("/v1/budget", json={"target": 0.3, "tenant": "shop"}, headers=as_tenant("shop")).status_code == 401


def test_tenant_tokens_come_from_the_config_and_must_exist_and_differ(
        tenanted: CascadeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "s")
    with pytest.raises(ConfigError, match="BANK_TOKEN"):
        TenantAccess.from_config(tenanted.serve.tenants)
    monkeypatch.setenv("BANK_TOKEN", "s")
    with pytest.raises(ConfigError, match="same token"):
        TenantAccess.from_config(tenanted.serve.tenants)
    monkeypatch.setenv("BANK_TOKEN", "b")
    access = TenantAccess.from_config(tenanted.serve.tenants)
    assert access.tenant_of("Bearer b") == "bank" and access.tenant_of("Bearer s") == "shop"
