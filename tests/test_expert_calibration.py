"""The expert's calibrator: fitted on its labelled pool judged leave-one-out (never the pool sample's own
label, never the fit / certify / test parts), cached, applied the same way in the harness and in serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from cascade import data
from cascade.calibration import ece, make_calibrator
from cascade.config import CascadeConfig, ExpertConfig
from cascade.expert_calibration import fit_expert_calibration
from cascade.experts import KnnVoteExpert, NeighbourRetriever
from cascade.experts.calibrated import CalibratedExpert, leaving_out_self
from cascade.scoring import score_expert

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "shuttle.yaml"


def _rows(n: int = 120, seed: int = 0) -> data.Dataset:
    """Two overlapping Gaussian classes in 3 features, with two exact duplicate rows."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 3 == 0).astype(int)
    X = rng.normal(size=(n, 3)) + 1.2 * y[:, None]
    X[1] = X[0]
    return data.Dataset(name="rows", y=y, label_names=("normal", "anomaly"), ids=np.arange(n),
                        groups=np.zeros(n), features=X)


def test_leave_one_out_retrieval_never_returns_the_query_itself_or_its_duplicates() -> None:
    pool = _rows()
    retriever = NeighbourRetriever(pool, k=5)
    plain, _ = retriever.query(pool.features)
    assert np.all(plain[2:, 0] == np.arange(2, len(pool)))  # as given, a pool sample retrieves itself first
    with retriever.leaving_out_self():
        left_out, weight = retriever.query(pool.features)
    assert not np.any(left_out == np.arange(len(pool))[:, None])
    assert not np.isin(left_out[0], [0, 1]).any() and not np.isin(left_out[1], [0, 1]).any()
    assert np.all(weight > 0)
    after, _ = retriever.query(pool.features)
    np.testing.assert_array_equal(after, plain)  # the block ends, retrieval is as given again


def test_leave_one_out_text_retrieval_skips_the_same_mail(spamassassin: data.Dataset) -> None:
    pool = spamassassin.subset(np.arange(0, 400, 10))
    retriever = NeighbourRetriever(pool, k=3)
    with retriever.leaving_out_self():
        index, _ = retriever.query(pool.texts)
    same_text = np.array([[pool.texts[j] == pool.texts[i] for j in row] for i, row in enumerate(index)])
    assert not same_text.any()


def test_leave_one_out_needs_one_more_sample_than_k() -> None:
    retriever = NeighbourRetriever(_rows(6), k=6)
    with pytest.raises(ValueError, match="pool of at least 7"):
        with retriever.leaving_out_self():
            pass


def test_the_vote_judged_leave_one_out_is_less_sure_than_with_its_own_label() -> None:
    pool = _rows()
    expert = KnnVoteExpert(NeighbourRetriever(pool, k=3), ["normal", "anomaly"])
    with_own_label = expert.judge(pool.features)
    with leaving_out_self(expert):
        left_out = expert.judge(pool.features)
    assert np.mean(left_out.predictions == pool.y) < np.mean(with_own_label.predictions == pool.y)


def _config(tmp_path: Path, calibrator: str | None = "platt") -> CascadeConfig:
    raw = CascadeConfig.from_yaml(CONFIG).model_dump(mode="json")
    raw["expert"] = {"kind": "knn-vote", "labels": ["normal", "anomaly"], "shots": 5, "calibrator": calibrator}
    raw["artifact_dir"] = str(tmp_path / "artifact")
    return CascadeConfig.from_dict(raw)


def test_the_calibrator_is_fitted_on_the_pool_judged_leave_one_out_and_cached(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade.scoring

    monkeypatch.setattr(cascade.scoring, "cache_dir", lambda name: tmp_path / "cache" / name)
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    config, pool = _config(tmp_path), _rows()
    made: list[KnnVoteExpert] = []

    def expert() -> KnnVoteExpert:
        made.append(KnnVoteExpert(NeighbourRetriever(pool, k=5), ["normal", "anomaly"]))
        return made[-1]

    first = fit_expert_calibration(config, "expert", config.expert, pool, expert, progress=False)
    assert first is not None and len(made) == 1 and not first.from_cache
    with leaving_out_self(made[0]):
        left_out = made[0].judge(pool.features).probs
    expected = make_calibrator("platt").fit(left_out, pool.y)
    probe = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8]])
    np.testing.assert_allclose(first.calibrator.transform(probe), expected.transform(probe))
    assert first.usage.calls == len(pool) and first.pool_size == len(pool)

    again = fit_expert_calibration(config, "expert", config.expert, pool, expert, progress=False)
    assert again is not None and again.from_cache and len(made) == 1  # no expert made: read from the cache
    np.testing.assert_allclose(again.calibrator.transform(probe), expected.transform(probe))


def test_calibration_none_fits_nothing(tmp_path: Path) -> None:
    config = _config(tmp_path, calibrator="none")
    assert fit_expert_calibration(config, "expert", config.expert, _rows(), lambda: pytest.fail("judged"),
                                  progress=False) is None


def test_a_calibrated_expert_answers_with_the_calibrated_probabilities() -> None:
    pool = _rows()
    expert = KnnVoteExpert(NeighbourRetriever(pool, k=5), ["normal", "anomaly"])
    with leaving_out_self(expert):
        raw = expert.judge(pool.features)
    calibrator = make_calibrator("platt").fit(raw.probs, pool.y)
    served = CalibratedExpert(expert, calibrator)
    queries = _rows(seed=1).features
    result = served.judge(queries)
    np.testing.assert_allclose(result.probs, calibrator.transform(expert.judge(queries).probs))
    np.testing.assert_allclose(asyncio.run(served.ajudge(queries)).probs, result.probs)
    assert result.label_names == expert.label_names and len(served.judge(queries[:0])) == 0


def test_platt_on_the_pool_makes_the_vote_better_calibrated_on_unseen_rows() -> None:
    pool, unseen = _rows(400, seed=2), _rows(400, seed=3)
    expert = KnnVoteExpert(NeighbourRetriever(pool, k=3), ["normal", "anomaly"])
    with leaving_out_self(expert):
        raw_pool = expert.judge(pool.features).probs
    raw = expert.judge(unseen.features).probs
    calibrated = make_calibrator("platt").fit(raw_pool, pool.y).transform(raw)
    assert ece(calibrated, unseen.y) < ece(raw, unseen.y)


def test_expert_calibration_defaults_to_platt_and_a_cnn_is_never_calibrated_on_its_training_pool() -> None:
    assert ExpertConfig(kind="knn-vote", shots=3).calibration == "platt"
    assert ExpertConfig(kind="vllm").calibration == "platt"
    assert ExpertConfig(kind="knn-vote", shots=3, calibrator="none").calibration == "none"
    assert ExpertConfig(kind="cnn").calibration == "none"


def test_a_cnn_expert_with_a_calibrator_is_refused_at_load(tmp_path: Path) -> None:
    from cascade.config import ConfigError

    raw = CascadeConfig.from_yaml(CONFIG.with_name("fashion-mnist.yaml")).model_dump(mode="json")
    raw["expert"]["calibrator"] = "platt"
    with pytest.raises(ConfigError, match="expert.calibrator"):
        CascadeConfig.from_dict(raw)


def test_score_expert_inside_the_block_is_the_left_out_scoring() -> None:
    pool = _rows()
    expert = KnnVoteExpert(NeighbourRetriever(pool, k=5), ["normal", "anomaly"])
    with leaving_out_self(expert):
        scores = score_expert(expert, pool, "expert", progress=False)
        direct = expert.judge(pool.features).probs
    np.testing.assert_allclose(scores.probs, direct)


def test_calibration_samples_bounds_the_expert_calls_with_a_seeded_draw_from_the_pool(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cascade.scoring
    from cascade.expert_calibration import calibration_draw

    monkeypatch.setattr(cascade.scoring, "cache_dir", lambda name: tmp_path / "cache" / name)
    (tmp_path / "cache" / "scores").mkdir(parents=True)
    raw = _config(tmp_path).model_dump(mode="json")
    raw["expert"]["calibration_samples"] = 50
    config, pool = CascadeConfig.from_dict(raw), _rows(200)
    calibration = fit_expert_calibration(config, "expert", config.expert, pool,
                                         lambda: KnnVoteExpert(NeighbourRetriever(pool, k=5), ["normal", "anomaly"]),
                                         progress=False)
    assert calibration is not None and calibration.usage.calls == calibration.judged == 50
    assert calibration.pool_size == 200
    draw = calibration_draw(pool, 50, config.experiment.seed)
    assert set(draw.ids) <= set(pool.ids) and list(draw.ids) == list(calibration_draw(pool, 50, 0).ids)
    assert list(draw.ids) != list(calibration_draw(pool, 50, 1).ids)
    assert calibration_draw(pool, None, 0) is pool and calibration_draw(pool, 500, 0) is pool
