"""Runtime knobs through Serve's ``user_config``: checked by the config's own models, applied in place."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from cascade.config import CascadeConfig, ConfigError
from deployments.contracts import ServiceSettings
from deployments.knobs import HOLDER_KNOBS, ROUTER_KNOBS, router_user_config, with_knobs
from serving import KeptDeferred, Tiers, client, detect, in_process_service

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("user_config", "needle"), [
    ({"serve": {"expert_timeout_s": -1}}, "user_config.serve.expert_timeout_s: Input should be greater than 0"),
    ({"serve": {"max_batch_size": "many"}}, "user_config.serve.max_batch_size: Input should be a valid integer"),
    ({"serve": {"breaker": {"failures": 0}}}, "user_config.serve.breaker.failures: Input should be greater than 0"),
    ({"serve": {"breaker": {"cooldown": 1}}}, "user_config.serve.breaker.cooldown: Extra inputs are not permitted"),
    ({"serve": {"port": 9000}}, "user_config.serve.port: not a runtime knob here"),
    ({"budget": {"target": 0.1}}, "user_config.budget: not a runtime knob here"),
    ({"serve": 5}, "user_config.serve: must be a mapping"),
    ([1, 2], "user_config: must be a mapping of config sections"),
])
def test_a_bad_router_user_config_names_the_field(config: CascadeConfig, user_config: Any, needle: str) -> None:
    with pytest.raises(ConfigError) as error:
        with_knobs(config, user_config, ROUTER_KNOBS)
    assert needle in str(error.value)


def test_a_bad_declared_target_names_the_field(config: CascadeConfig) -> None:
    with pytest.raises(ConfigError, match=r"user_config\.budget\.target: Input should be greater than 0"):
        with_knobs(config, {"budget": {"target": -0.2}}, HOLDER_KNOBS)


def test_knobs_left_out_keep_the_configs_values(config: CascadeConfig) -> None:
    changed = with_knobs(config, {"serve": {"expert_timeout_s": 3, "breaker": {"failures": 7}}}, ROUTER_KNOBS)
    assert changed.serve.expert_timeout_s == 3.0 and changed.serve.breaker.failures == 7
    assert changed.serve.breaker.cooldown_s == config.serve.breaker.cooldown_s
    assert changed.serve.router_batch_wait_timeout_s == config.serve.router_batch_wait_timeout_s
    assert changed.serve.port == config.serve.port and changed.budget == config.budget


def test_the_router_starts_with_the_configs_knobs(config: CascadeConfig) -> None:
    from deployments.app import deployment_options

    started = deployment_options(config)["router"]["user_config"]
    assert started == router_user_config(config)
    assert with_knobs(config, started, ROUTER_KNOBS) == config


def test_the_shipped_serve_yaml_sets_no_knob_over_the_cascade_config() -> None:
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load((ROOT / "deployments" / "configs" / "spamassassin.yaml").read_text())
    application = ServeDeploySchema.model_validate(raw).applications[0]
    assert application.deployments == []  # a knob there would win over the CascadeConfig's value


def test_a_retuned_expert_timeout_applies_to_the_next_request(config: CascadeConfig, knn_expert: Any, tiers: Tiers,
                                                              kept_and_deferred: KeptDeferred) -> None:
    class SlowExpert:
        """The real control expert, answering 0.2 s late."""

        label_names = knn_expert.label_names

        async def ajudge(self, X: Any) -> Any:
            await asyncio.sleep(0.2)
            return await knn_expert.ajudge(X)

        def __getattr__(self, name: str) -> Any:
            return getattr(knn_expert, name)

    deferred = kept_and_deferred[1][:2]
    asyncio.run(knn_expert.ajudge(deferred))  # the first call loads the retriever's encoder: not part of this test
    service = in_process_service(config, SlowExpert(), tiers)
    http = client(_app_for(config, service))
    assert [v["degraded"] for v in detect(http, deferred).json()["verdicts"]] == [False, False]
    impatient = with_knobs(config, {"serve": {"expert_timeout_s": 0.01, "breaker": {"failures": 10}}}, ROUTER_KNOBS)
    service.retune(ServiceSettings.from_config(impatient, tiers[0]))
    assert [v["degraded"] for v in detect(http, deferred).json()["verdicts"]] == [True, True]
    assert service.breaker.failures == 10


def _app_for(config: CascadeConfig, service: Any) -> Any:
    from deployments.control import ControlAccess
    from deployments.http import build_http_app

    return build_http_app(service, config.serve, ControlAccess.from_token("t"))
