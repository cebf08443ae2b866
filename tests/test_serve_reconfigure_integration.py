"""``serve deploy`` with a changed ``user_config`` updates the running app in place: the Serve YAML of
``deployments/configs`` (pointed at a tuned test artifact with the knn-vote expert, knobs added) is deployed the
way ``serve deploy`` does it, then deployed again with new knobs while requests keep coming."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from serving import CONTROL_TOKEN, cascade_config, free_port, load_tiers, split_by_score, tune_artifact

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]


def _deploy(raw: dict[str, Any]) -> None:
    """What ``serve deploy`` asks the controller to do; wait until the app runs this deployment."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    def deployed_at() -> float | None:
        app = serve.status().applications.get("cascade")
        return app.last_deployed_time_s if app is not None else None

    before = deployed_at()
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(raw))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        app = serve.status().applications.get("cascade")
        if app is not None and app.last_deployed_time_s != before and app.status == "RUNNING":
            return
        time.sleep(0.5)
    raise TimeoutError(f"the app did not run the new deployment: {serve.status().applications.get('cascade')}")


def _router_replicas() -> set[str]:
    import ray

    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if "#CascadeRouter#" in actor["name"]}


def test_serve_deploy_changes_knobs_in_place_without_losing_requests(tmp_path: Path, spamassassin: Any) -> None:
    import ray
    from ray import serve

    from deployments.app import init_ray

    tune_artifact(tmp_path / "artifact")
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(CONTROL_TOKEN)
    config = cascade_config(tmp_path / "artifact", serve={"port": port, "control": {"token_file": str(token_file)}})
    config_file = tmp_path / "cascade.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    texts = [spamassassin.texts[i][:2000] for i in range(7, len(spamassassin), 23)][:200]
    kept, deferred = split_by_score(load_tiers(config), texts)
    raw = yaml.safe_load((ROOT / "deployments" / "configs" / "spamassassin.yaml").read_text())
    raw["http_options"]["port"] = port
    raw["applications"][0]["args"]["config"] = str(config_file)
    raw["applications"][0]["deployments"] = [
        {"name": "CascadeRouter", "user_config": {"serve": {"expert_timeout_s": 20.0}}},
        {"name": "BudgetHolder", "user_config": {"budget": {"target": 0.2}}},
    ]

    init_ray(num_cpus=2)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        _deploy(raw)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=60.0) as http:
            before = http.post("/v1/detect", json={"samples": [{"text": t} for t in deferred[:2]]}).json()
            replicas = _router_replicas()
            answers: list[httpx.Response] = []
            stop = threading.Event()

            def keep_sending() -> None:
                with httpx.Client(base_url=url, timeout=60.0) as sender:
                    i = 0
                    while not stop.is_set():
                        answers.append(sender.post("/v1/detect", json={"samples": [{"text": kept[i % len(kept)]}]}))
                        i += 1

            sender = threading.Thread(target=keep_sending)
            sender.start()
            changed = copy.deepcopy(raw)
            changed_knobs = {d["name"]: d for d in changed["applications"][0]["deployments"]}
            changed_knobs["CascadeRouter"]["user_config"]["serve"]["expert_timeout_s"] = 1e-6
            changed_knobs["BudgetHolder"]["user_config"]["budget"]["target"] = 0.35
            _deploy(changed)
            replicas_after = _router_replicas()
            after = http.post("/v1/detect", json={"samples": [{"text": t} for t in deferred[:2]]}).json()
            stop.set()
            sender.join()
            budget = http.get("/v1/budget").json()
    finally:
        serve.shutdown()
        ray.shutdown()
    assert [v["degraded"] for v in before["verdicts"]] == [False, False]
    assert [v["source"] for v in before["verdicts"]] == ["expert", "expert"]
    assert [v["degraded"] for v in after["verdicts"]] == [True, True]  # the expert may no longer take 1 µs
    assert budget["target"] == 0.35
    assert replicas and replicas_after == replicas  # reconfigured in place, not replaced
    statuses = {answer.status_code for answer in answers}
    assert answers and statuses == {200}, f"requests lost or failed during the update: {statuses}"
    assert all(len(answer.json()["verdicts"]) == 1 for answer in answers)  # each mail got its verdict
