"""A certify part used to tune is counted: a second, different tuning on it is refused, or spends δ
explicitly and the certificate says so; re-running an identical tuning counts once."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import CascadeConfig, ConfigError
from policies.certificate import Certificate
from policies.certify_ledger import CertifyLedger, CertifyPartReused, Spent
from tables import write_tumours

PART, LABEL = "part-1", "the certify part of toy (n=300, seed 0)"


@pytest.fixture
def ledger(tmp_path: Path) -> CertifyLedger:
    return CertifyLedger(tmp_path / "certify-uses")


def _certificate(delta: float | None) -> Certificate:
    return Certificate(kind="rate", method="m", threshold=0.5, target={"defer_rate": 0.2},
                       achieved={"defer_rate": 0.19}, bound={"defer_rate": 0.2},
                       guarantee="in expectation" if delta is None else "with probability ≥ 1-δ",
                       statement="the bound", n=300, delta=delta)


def test_a_second_tuning_on_a_used_part_is_refused_naming_the_part_the_earlier_use_and_the_way_on(
        ledger: CertifyLedger) -> None:
    ledger.record(PART, LABEL, "rate-0.2", delta=None, reuse="refuse", artifact="artifacts/first")
    with pytest.raises(CertifyPartReused) as refused:
        ledger.record(PART, LABEL, "rate-0.1", delta=None, reuse="refuse", artifact="artifacts/second")
    message = str(refused.value)
    assert isinstance(refused.value, ConfigError) and "\n" not in message
    assert message.startswith("budget.certify_reuse: " + LABEL) and "artifacts/first" in message
    assert "in expectation" in message and "spend-delta" in message and "fresh labelled data" in message
    assert [use["tuning"] for use in ledger.uses(PART)] == ["rate-0.2"]


def test_re_running_an_identical_tuning_counts_once(ledger: CertifyLedger) -> None:
    first = ledger.record(PART, LABEL, "rate-0.2", delta=0.05, reuse="refuse", artifact="a")
    again = ledger.record(PART, LABEL, "rate-0.2", delta=0.05, reuse="refuse", artifact="elsewhere")
    assert first == again == Spent(uses=1, delta_spent=0.05, uncovered=0)
    assert len(ledger.uses(PART)) == 1


def test_spend_delta_admits_a_second_tuning_and_sums_the_deltas(ledger: CertifyLedger) -> None:
    ledger.record(PART, LABEL, "rate-0.2", delta=0.05, reuse="refuse", artifact="a")
    spent = ledger.record(PART, LABEL, "rate-0.1", delta=0.02, reuse="spend-delta", artifact="b")
    assert spent.uses == 2 and spent.delta_spent == pytest.approx(0.07)
    certificate = spent.apply(_certificate(0.02))
    assert certificate.certify_uses == 2 and certificate.delta_spent == pytest.approx(0.07)
    assert "used for 2 tunings" in certificate.statement and "probability ≥ 0.93" in certificate.statement


def test_in_expectation_reuse_is_counted_and_said_not_covered(ledger: CertifyLedger) -> None:
    ledger.record(PART, LABEL, "cost-400", delta=None, reuse="refuse", artifact="a")
    spent = ledger.record(PART, LABEL, "rate-0.2", delta=None, reuse="spend-delta", artifact="b")
    certificate = spent.apply(_certificate(None))
    assert certificate.certify_uses == 2 and certificate.delta_spent is None
    assert "repeated in-expectation tunings on one part are not covered" in certificate.statement
    with_delta = ledger.record(PART, LABEL, "rate-0.2-delta", delta=0.05, reuse="spend-delta", artifact="c")
    assert with_delta == Spent(uses=3, delta_spent=0.05, uncovered=2)
    assert "except 2 in-expectation" in with_delta.apply(_certificate(0.05)).statement


def test_another_certify_part_is_not_refused(ledger: CertifyLedger) -> None:
    ledger.record(PART, LABEL, "rate-0.2", delta=None, reuse="refuse", artifact="a")
    spent = ledger.record("part-2", "another part", "rate-0.1", delta=None, reuse="refuse", artifact="b")
    assert spent == Spent(uses=1, delta_spent=None, uncovered=0)


def test_a_single_use_leaves_the_statement_alone(ledger: CertifyLedger) -> None:
    spent = ledger.record(PART, LABEL, "rate-0.2", delta=0.05, reuse="refuse", artifact="a")
    certificate = spent.apply(_certificate(0.05))
    assert certificate.statement == "the bound" and (certificate.certify_uses, certificate.delta_spent) == (1, 0.05)


def test_certify_reuse_is_validated_at_config_load() -> None:
    with pytest.raises(ConfigError, match="budget.certify_reuse"):
        CascadeConfig.from_dict({"dataset": {"name": "spamassassin"}, "budget": {"certify_reuse": "ignore"}})


@pytest.fixture
def tumours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Breast-cancer rows as the user's own CSV, with a cascade home and a certify ledger of their own."""
    import policies.certify_ledger

    monkeypatch.setenv("CASCADE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(policies.certify_ledger, "cache_dir", lambda name: tmp_path / "ledger" / name)
    write_tumours(tmp_path)
    return {"name": "tumours", "artifact_dir": str(tmp_path / "artifact"),
            "dataset": {"name": "csv", "path": str(tmp_path / "tumours.csv"), "label_column": "diagnosis",
                        "positive_label": "malignant"},
            "detector": {"kind": "tabular-lr"}, "calibrator": {"kind": "platt"}, "policy": {"kind": "confidence"},
            "expert": {"kind": "knn-vote", "shots": 4, "labels": ["benign", "malignant"]},
            "budget": {"kind": "rate", "target": 0.3, "delta": 0.1}}


def test_cascade_tune_counts_its_certify_part_in_the_artifact(tumours: dict, tmp_path: Path) -> None:
    import json

    from policies.tune import tune

    first = tune(CascadeConfig.from_dict(tumours), progress=False)
    assert (first["certify_uses"], first["delta_spent"]) == (1, 0.1)
    tumours["serve"] = {"port": 9001}
    tumours["artifact_dir"] = str(tmp_path / "rerun")
    assert tune(CascadeConfig.from_dict(tumours), progress=False)["certify_uses"] == 1  # same tuning, re-run
    tumours["budget"] = {"kind": "rate", "target": 0.2, "delta": 0.1}
    with pytest.raises(CertifyPartReused, match="already used to tune 1 time"):
        tune(CascadeConfig.from_dict(tumours), progress=False)
    tumours["budget"]["certify_reuse"] = "spend-delta"
    second = tune(CascadeConfig.from_dict(tumours), progress=False)
    assert (second["certify_uses"], second["delta_spent"]) == (2, pytest.approx(0.2))
    saved = json.loads((Path(tumours["artifact_dir"]) / "certificate.json").read_text())
    assert saved == second and "used for 2 tunings" in saved["statement"]
    tumours["experiment"] = {"seed": 1}
    tumours["budget"]["certify_reuse"] = "refuse"
    assert tune(CascadeConfig.from_dict(tumours), progress=False)["certify_uses"] == 1  # another certify part
