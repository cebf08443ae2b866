"""Saved policies, certificates, hops and cascades load back identical; corrupt files fail at load, by name."""

import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from cascade.artifact import ArtifactError, write_manifest
from policies import (
    POLICIES, AcceptedErrorTuner, Cascade, Certificate, ConfidencePolicy, Hop, PosthocPolicy, RandomPolicy, RateTuner, load_policy,
    make_policy, simulate,
)
from policies.base import MANIFEST_KIND
from policies.ties import defer_mask


@pytest.fixture(autouse=True)
def single_openmp_thread():
    """Gradient boosting's OpenMP threads spin-wait; on a busy 2-core machine one thread is far steadier."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def data():
    return simulate(2000, seed=0)


def fitted(kind, data, **params):
    return make_policy(kind, **params).fit(data.features, data.small_correct, data.expert_correct)


def rewrite_sealed(folder, file, edit):
    """Edit a saved JSON file in place and re-seal the folder's manifest (a consistent, deliberate rewrite)."""
    path = folder / file
    body = json.loads(path.read_text())
    edit(body)
    path.write_text(json.dumps(body))
    write_manifest(folder, MANIFEST_KIND)


def scores(policy, data):
    if policy.kind == "oracle":
        return policy.score(data.features, data.small_correct, data.expert_correct)
    return policy.score(data.features)


@pytest.mark.parametrize("kind", sorted(set(POLICIES) - {"posthoc"}))
def test_every_policy_kind_round_trips(kind, data, tmp_path):
    policy = fitted(kind, data)
    policy.save(tmp_path)
    loaded = load_policy(tmp_path)
    assert type(loaded) is type(policy) and loaded.get_params() == policy.get_params()
    assert np.array_equal(scores(loaded, data), scores(policy, data))


@pytest.mark.parametrize("model", ["logistic", "gradient-boosting", "outcomes"])
def test_posthoc_policy_round_trips_with_its_estimators(model, data, tmp_path):
    policy = PosthocPolicy(model=model, n_classes=2).fit(
        data.features, data.small_correct, data.expert_correct, cost=data.expert_cost
    )
    policy.save(tmp_path)
    assert np.array_equal(PosthocPolicy.load(tmp_path).score(data.features), policy.score(data.features))


def test_saved_policies_hold_only_json_and_skops_files(data, tmp_path):
    PosthocPolicy(n_classes=2).fit(data.features, data.small_correct, data.expert_correct).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["estimator_.skops", "manifest.json", "policy.json"]


def test_a_posthoc_policy_saved_without_its_gain_model_fails_at_load(data, tmp_path):
    PosthocPolicy(model="outcomes", n_classes=2).fit(data.features, data.small_correct, data.expert_correct).save(tmp_path)
    rewrite_sealed(tmp_path, "policy.json", lambda body: body["params"].update(model="logistic"))
    with pytest.raises(ArtifactError, match=r"policy.json: missing policy state \['estimator_'\]"):
        load_policy(tmp_path)


def test_certificate_round_trips_including_an_infinite_threshold(tmp_path):
    accept_everything = AcceptedErrorTuner(alpha=0.1, delta=0.1, grid=[np.inf])   # a small tier never wrong here
    certificate = accept_everything.fit(np.linspace(0, 1, 100), np.ones(100, dtype=bool)).certificate_
    certificate.save(tmp_path)
    loaded = Certificate.load(tmp_path)
    assert loaded == certificate and loaded.threshold == np.inf


def test_hop_round_trips_policy_threshold_and_certificate(data, tmp_path):
    policy = ConfidencePolicy(n_classes=2)
    tuner = RateTuner(target=0.2, delta=0.1).fit(policy.score(data.features))
    Hop(policy, tuner.threshold_, tuner.certificate_).save(tmp_path)
    hop = Hop.load(tmp_path)
    assert hop.threshold == tuner.threshold_ and hop.certificate == tuner.certificate_
    assert np.array_equal(hop.defer(data.features), defer_mask(policy.score(data.features), tuner.threshold_))


def test_cascade_round_trips(data, tmp_path):
    cascade = Cascade(
        [Hop(ConfidencePolicy(), 0.2), Hop(fitted("posthoc", data, n_classes=2), 0.0)], ["small", "medium", "large"]
    )
    cascade.save(tmp_path)
    loaded = Cascade.load(tmp_path)
    features = [data.features[:, :2], data.features]
    assert loaded.tiers == cascade.tiers and np.array_equal(loaded.route(features), cascade.route(features))


def test_loading_a_policy_as_another_kind_fails(tmp_path):
    ConfidencePolicy().save(tmp_path)
    with pytest.raises(ArtifactError, match="holds a 'confidence' policy, not 'posthoc'"):
        PosthocPolicy.load(tmp_path)


def corrupt(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["policy.json", "estimator_.skops"])
def test_a_corrupt_policy_file_fails_at_load_naming_the_file(name, data, tmp_path):
    fitted("posthoc", data, n_classes=2).save(tmp_path)
    corrupt(tmp_path / name)
    with pytest.raises(ArtifactError, match=str(tmp_path / name)):
        load_policy(tmp_path)


def test_a_corrupt_certificate_fails_at_load_naming_the_file(tmp_path):
    RateTuner().fit(np.linspace(0, 1, 50)).certificate_.save(tmp_path)
    corrupt(tmp_path / "certificate.json")
    with pytest.raises(ArtifactError, match=str(tmp_path / "certificate.json")):
        Certificate.load(tmp_path)


def test_a_corrupt_file_inside_a_cascade_fails_at_load_naming_it(data, tmp_path):
    Cascade([Hop(fitted("posthoc", data, n_classes=2), 0.0)]).save(tmp_path)
    corrupt(tmp_path / "hop-0" / "policy" / "estimator_.skops")
    with pytest.raises(ArtifactError, match="estimator_.skops"):
        Cascade.load(tmp_path)


def test_a_consistently_rewritten_but_invalid_certificate_fails_at_load(tmp_path):
    RateTuner().fit(np.linspace(0, 1, 50)).certificate_.save(tmp_path)
    rewrite_sealed(tmp_path, "certificate.json", lambda body: body["certificate"].update(guarantee="trust me"))
    with pytest.raises(ArtifactError, match="certificate.json: not a valid certificate"):
        Certificate.load(tmp_path)


def test_a_missing_manifest_fails_at_load(tmp_path):
    ConfidencePolicy().save(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        load_policy(tmp_path)


def test_random_policy_stream_restarts_from_its_seed_after_loading(data, tmp_path):
    RandomPolicy(seed=4).save(tmp_path)
    assert np.array_equal(load_policy(tmp_path).score(data.features), RandomPolicy(seed=4).score(data.features))


def test_a_policy_file_that_smuggles_in_state_is_refused(tmp_path):
    ConfidencePolicy().save(tmp_path)
    rewrite_sealed(tmp_path, "policy.json", lambda body: body["state"].update(score="overridden"))
    with pytest.raises(ArtifactError, match=r"policy.json: unexpected state \['score'\]"):
        load_policy(tmp_path)
