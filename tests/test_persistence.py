"""One persistence scheme and one "not fitted" error for detectors, calibrators and policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.exceptions

from cascade.artifact import ArtifactError, write_manifest
from cascade.calibration import load_calibrator, make_calibrator
from cascade.data.dataset import Dataset
from cascade.detectors import load_detector, make_detector
from cascade.features import NeighbourDistance
from cascade.persistence import NotFittedError
from cascade.small import SmallTier
from policies import PosthocPolicy, load_policy, simulate

ROWS = np.random.default_rng(0).normal(size=(200, 3))
PROBS = np.column_stack([np.linspace(0.05, 0.95, 200)[::-1], np.linspace(0.05, 0.95, 200)])
LABELS = (np.random.default_rng(1).uniform(size=200) < PROBS[:, 1]).astype(int)


def test_not_fitted_is_sklearns_error() -> None:
    assert issubclass(NotFittedError, sklearn.exceptions.NotFittedError)


@pytest.mark.parametrize("use", [
    lambda: make_detector("isolation-forest").predict_proba(ROWS),
    lambda: make_detector("isolation-forest").save("never-written"),
    lambda: make_calibrator("platt").transform(PROBS),
    lambda: make_calibrator("isotonic").save("never-written"),
    lambda: PosthocPolicy().score(PROBS),
    lambda: PosthocPolicy().save("never-written"),
    lambda: SmallTier(make_detector("tfidf-lr"), make_calibrator("none")).predict_proba(["a mail"]),
    lambda: NeighbourDistance("features").transform(ROWS),
], ids=["detector-predict", "detector-save", "calibrator-transform", "calibrator-save", "policy-score",
        "policy-save", "small-tier", "distance-feature"])
def test_every_unfitted_estimator_raises_not_fitted(use) -> None:
    with pytest.raises(NotFittedError, match="is not fitted"):
        use()
    assert not Path("never-written").exists()


def small_tier(**options: Any) -> SmallTier:
    """An isolation-forest small tier fitted on rows that shift with their label."""
    rows = Dataset(name="rows", y=LABELS, label_names=("normal", "anomaly"), ids=np.arange(200),
                   groups=np.zeros(200), features=ROWS + LABELS[:, None])
    return SmallTier(make_detector("isolation-forest", n_estimators=20), make_calibrator("platt"), **options).fit(rows, rows)


def test_detector_calibrator_policy_and_small_tier_directories_share_one_layout(tmp_path: Path) -> None:
    data = simulate(500, seed=0)
    make_detector("isolation-forest", n_estimators=20).fit(ROWS).save(tmp_path / "detector")
    make_calibrator("platt").fit(PROBS, LABELS).save(tmp_path / "calibrator")
    PosthocPolicy(n_classes=2).fit(data.features, data.small_correct, data.expert_correct).save(tmp_path / "policy")
    small_tier().save(tmp_path / "small")
    for family in ("detector", "calibrator", "policy", "small"):
        body = json.loads((tmp_path / family / f"{family}.json").read_text())
        assert {"kind", "params", "state", "estimators", "arrays", "format", "format_version"} == set(body)
        manifest = json.loads((tmp_path / family / "manifest.json").read_text())
        assert f"{family}.json" in manifest["files"]
    assert {"detector/detector.json", "calibrator/calibrator.json"} <= set(manifest["files"])  # its parts too


def test_a_small_tier_round_trips_with_its_distance_feature(tmp_path: Path) -> None:
    small = small_tier(distance_feature=True)
    small.save(tmp_path)
    loaded = SmallTier.load(tmp_path)
    assert loaded.get_params(deep=False).keys() == small.get_params(deep=False).keys()
    np.testing.assert_array_equal(loaded.features(ROWS), small.features(ROWS))


def test_a_small_tier_whose_parts_disagree_on_the_classes_fails_at_load_naming_its_file(tmp_path: Path) -> None:
    small_tier().save(tmp_path)
    body = json.loads((tmp_path / "small.json").read_text())
    body["state"]["n_classes_"] = 3
    (tmp_path / "small.json").write_text(json.dumps(body))
    write_manifest(tmp_path, "cascade.small.manifest")
    with pytest.raises(ArtifactError, match=r"small.json: fitted for 3 classes, the detector has 2"):
        SmallTier.load(tmp_path)


def test_a_file_without_its_state_lists_is_refused_naming_it(tmp_path: Path) -> None:
    make_detector("isolation-forest", n_estimators=20).fit(ROWS).save(tmp_path)
    body = json.loads((tmp_path / "detector.json").read_text())
    del body["estimators"], body["arrays"]
    (tmp_path / "detector.json").write_text(json.dumps(body))
    write_manifest(tmp_path, "cascade.detector.manifest")
    with pytest.raises(ArtifactError, match=r"detector.json: missing detector state"):
        load_detector(tmp_path)


def test_an_edited_calibrator_without_its_manifest_still_fails_inside_a_small_tier(tmp_path: Path) -> None:
    """The small tier's manifest checksums every file below it, so dropping the calibrator's own seal does not help."""
    small_tier().save(tmp_path)
    (tmp_path / "calibrator" / "manifest.json").unlink()
    path = tmp_path / "calibrator" / "calibrator.json"
    path.write_text(path.read_text().replace('"platt"', '"none"'))
    with pytest.raises(ArtifactError, match="calibrator.json: checksum mismatch"):
        SmallTier.load(tmp_path)


def test_state_of_another_class_is_refused(tmp_path: Path) -> None:
    make_calibrator("platt").fit(PROBS, LABELS).save(tmp_path)
    body = json.loads((tmp_path / "calibrator.json").read_text())
    body["estimators"] = ["../../elsewhere"]
    (tmp_path / "calibrator.json").write_text(json.dumps(body))
    write_manifest(tmp_path, "cascade.calibrator.manifest")
    with pytest.raises(ArtifactError, match=r"unexpected state \['../../elsewhere'\] for a 'platt' calibrator"):
        load_calibrator(tmp_path)
    with pytest.raises(ArtifactError):
        load_policy(tmp_path)

