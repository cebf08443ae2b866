"""A tuned three-tier chain in the real Ray Serve app: one expert deployment per tier, the router climbing
them hop by hop as the certified rule routes, abstained samples readable by reviewers and labelled back."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from cascade.config import CascadeConfig
from serving import free_port, served_app
from test_serve_chain import config, routed, test_rows  # noqa: F401  (module fixtures and the offline routing)

pytestmark = pytest.mark.integration
FEEDBACK = "chain-feedback-token"


@pytest.fixture(scope="module")
def url(config: CascadeConfig) -> Iterator[str]:  # noqa: F811
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASCADE_FEEDBACK_TOKEN", FEEDBACK)
        served = config.model_copy(update={"serve": config.serve.model_copy(update={
            "port": free_port(), "router_num_cpus": 0.1, "expert_num_cpus": 0.1})})
        with served_app(served) as app_url:
            yield app_url


def test_each_tier_is_its_own_deployment_and_verdicts_follow_the_certified_rule(
        url: str, config: CascadeConfig, test_rows: np.ndarray) -> None:  # noqa: F811
    from ray import serve

    deployments = set(serve.status().applications["cascade"].deployments)
    assert {"ExpertServer-near", "ExpertServer-wide"} <= deployments and "ExpertServer" not in deployments
    response = httpx.post(f"{url}/v1/detect", json={"samples": [{"features": r.tolist()} for r in test_rows]},
                          timeout=120.0)
    assert response.status_code == 200, response.text
    names = ["small", "near", "wide"]
    expected = [names[k] if k >= 0 else None for k in routed(config, test_rows)]
    verdicts = response.json()["verdicts"]
    assert [v["tier"] for v in verdicts] == expected
    assert all(v["certified"] and not v["degraded"] for v in verdicts)
    tier_cost = {tier.name: tier.cost_per_call for tier in config.tiers or []}
    through_all = config.cost.small_per_call + sum(tier_cost.values())
    assert all(v["cost"] == pytest.approx(through_all) for v in verdicts if v["source"] == "abstained")
    ready = httpx.get(f"{url}/readyz", timeout=30.0).json()
    assert ready["status"] == "ready" and set(ready["tiers"]) == {"near", "wide"}

    reviewer = {"Authorization": f"Bearer {FEEDBACK}"}
    abstained = [v["decision_id"] for v in verdicts if v["source"] == "abstained"]
    assert abstained
    waiting = {item["decision_id"] for item in httpx.get(f"{url}/v1/review", headers=reviewer,
                                                         params={"limit": 1000}, timeout=30.0).json()["items"]}
    assert set(abstained) <= waiting
    sent = httpx.post(f"{url}/v1/feedback", headers=reviewer, timeout=30.0,
                      json={"items": [{"decision_id": abstained[0], "label": "benign"}]})
    assert sent.json()["counts"] == {"ok": 1}
    after = httpx.get(f"{url}/v1/review", headers=reviewer, params={"limit": 1000}, timeout=30.0).json()
    assert abstained[0] not in {item["decision_id"] for item in after["items"]}
