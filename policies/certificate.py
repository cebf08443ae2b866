"""What a budget tuner guarantees about the threshold it picked, as a frozen, saveable record.

Metrics are named ``defer_rate`` (share of requests sent to the expert), ``accepted_error``
(error rate of the small tier's non-deferred answers) and ``cost_per_1k`` (cost units per 1,000
requests). A sample is deferred when ``score > threshold``, or when it ties with the threshold and
its tie key exceeds ``tie_break`` (:func:`policies.ties.defer_mask`).

>>> c = Certificate(kind="rate", method="conformal risk control", threshold=0.42,
...                 target={"defer_rate": 0.2}, achieved={"defer_rate": 0.19},
...                 bound={"defer_rate": 0.1996}, guarantee="in expectation",
...                 statement="E[defer_rate] <= 0.2", n=500, delta=None)
>>> c.holds
True
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cascade.artifact import ArtifactError, read_json, verify_manifest, write_json, write_manifest
from policies.base import MANIFEST_KIND

CERTIFICATE_FILE = "certificate.json"
CERTIFICATE_KIND = "cascade.certificate"
BudgetKind = Literal["rate", "cost", "accepted-error", "joint"]
Guarantee = Literal["in expectation", "with probability ≥ 1-δ"]
IN_EXPECTATION: Final = "in expectation"
WITH_PROBABILITY: Final = "with probability ≥ 1-δ"


class CertificateBase(BaseModel):
    """What every certificate states, whatever the rule: the method, each target metric with the value
    achieved on the certify part and the bound proved (never above its target), the guarantee in words,
    ``n``, the part, and how often the part has been used (:mod:`policies.certify_ledger`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="strings")

    method: str
    target: dict[str, float]
    achieved: dict[str, float]
    bound: dict[str, float]
    guarantee: Guarantee
    statement: str
    n: int
    part: str = "certify"
    """the data part the rule was certified on (``n`` samples of it)"""
    certify_uses: int = 1
    """distinct tunings on this certify part so far, this one included (:mod:`policies.certify_ledger`);
    above 1 the single-tuning guarantee no longer covers choosing among them"""
    delta_spent: float | None = None
    """the δ spent on this certify part over all its tunings (Bonferroni sum): with probability ≥ 1 -
    ``delta_spent`` every bound certified on it holds. None for an in-expectation certificate"""

    @property
    def holds(self) -> bool:
        """Whether every bound is within its target (always true for a tuner's certificate)."""
        return all(self.bound[metric] <= target for metric, target in self.target.items())


class Certificate(CertificateBase):
    """Target, value achieved on the certify part, guaranteed bound, ``n`` and ``δ`` of one threshold.

    ``bound`` holds, per target metric, the upper bound the method proves (conformal risk
    control bound, or a Clopper-Pearson upper confidence bound at the tested level); it never
    exceeds the target. ``threshold`` may be ``±inf`` (defer nothing / everything).
    """

    kind: BudgetKind
    threshold: float
    delta: float | None
    tie_break: float = 1.0
    """a sample scoring exactly ``threshold`` is deferred when its tie key exceeds this (1: never)"""
    tie_seed: int | None = None
    """seed of the tie keys (:func:`policies.ties.tie_keys`); None when ties were not broken"""
    passed_rules: list[tuple[float, float]] | None = None
    """Learn-then-Test: every grid rule ``(threshold, tie_break)`` that passed, valid simultaneously
    (the family-wise error control covers them all); serving may move only among them. None for
    conformal tuners, whose certificate is about ``threshold`` alone"""

    def save(self, directory: str | Path) -> None:
        """Write ``certificate.json`` and a checksum manifest into ``directory``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / CERTIFICATE_FILE, CERTIFICATE_KIND, {"certificate": self.model_dump()})
        write_manifest(path, MANIFEST_KIND)

    @classmethod
    def load(cls, directory: str | Path) -> Certificate:
        """Load a saved certificate; a corrupt file raises ``ArtifactError`` naming it."""
        verify_manifest(directory, MANIFEST_KIND)
        path = Path(directory) / CERTIFICATE_FILE
        body = read_json(path, CERTIFICATE_KIND)
        try:
            return cls.model_validate(body.get("certificate"))
        except ValidationError as exc:
            raise ArtifactError(f"{path}: not a valid certificate ({exc.error_count()} problems: {exc})") from exc


class InfeasibleTarget(ValueError):
    """No threshold meets the target with the guarantee asked for; ``best`` says what can be met."""

    def __init__(self, message: str, best: dict[str, float]) -> None:
        super().__init__(message)
        self.best = best
