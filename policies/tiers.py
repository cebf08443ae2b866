"""N-tier cascades over arrays: small → medium → large, each hop with its own policy and threshold.

Tier ``h`` answers a sample unless hop ``h`` defers it to tier ``h + 1``: the hop's policy scores
tier ``h``'s features (its calibrated probabilities, plus any extra columns) and the sample moves
on when ``score > threshold``, or, for a score tied with the threshold, when the sample's tie key
is above the certificate's tie cut (:mod:`policies.ties`; keys hashed from the samples with the
certificate's ``tie_seed``). The last tier always answers. Only samples that reach a hop are
scored there, as in serving.

:meth:`Cascade.tune` fits each hop's threshold with a budget tuner on the calibration samples that
reach that hop, so each hop's certificate is *conditional on reaching it* (e.g. "at most 20% of the
requests the medium tier sees go on to the large one").

>>> import numpy as np
>>> from policies import ConfidencePolicy
>>> cascade = Cascade([Hop(ConfidencePolicy(), 0.2), Hop(ConfidencePolicy(), 0.1)])
>>> small = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45]])
>>> medium = np.array([[0.9, 0.1], [0.95, 0.05], [0.7, 0.3]])
>>> cascade.route([small, medium]).tolist()
[0, 1, 2]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from cascade.artifact import read_json, verify_manifest, write_json, write_manifest
from policies.base import MANIFEST_KIND, PolicyBase
from policies.certificate import Certificate
from policies.registry import load_policy
from policies.ties import NO_TIE_BREAK, defer_mask, keys_for_ties, tie_keys
from policies.tuners import BudgetTuner

HOP_FILE, HOP_KIND = "hop.json", "cascade.hop"
CASCADE_FILE, CASCADE_KIND = "cascade.json", "cascade.cascade"


Samples = Sequence[str] | np.ndarray
"""what :func:`policies.ties.tie_keys` hashes: texts, or feature rows"""


@dataclass
class Hop:
    """One escalation step: defer to the next tier when ``policy.score(features) > threshold``, or on
    a tie when the sample's key is above the certificate's ``tie_break`` (:func:`policies.ties.defer_mask`).

    Without a certificate, or with one whose ties were not broken (``tie_seed`` None), a tie stays.
    """

    policy: PolicyBase
    threshold: float
    certificate: Certificate | None = None

    @property
    def tie_seed(self) -> int | None:
        """Seed of the certificate's tie keys; None when the rule breaks no ties."""
        return None if self.certificate is None else self.certificate.tie_seed

    @property
    def tie_break(self) -> float:
        """The certificate's tie cut; :data:`~policies.ties.NO_TIE_BREAK` when the rule breaks no ties."""
        return NO_TIE_BREAK if self.certificate is None or self.tie_seed is None else self.certificate.tie_break

    def defer(self, features: ArrayLike, samples: Samples | None = None) -> np.ndarray:
        """Boolean mask of the samples this hop sends on; ``samples`` (the texts or feature rows the
        tuner's tie keys were hashed from, aligned with ``features``) are needed when the certificate
        splits ties, and only the tied ones are hashed."""
        scores = self.policy.score(features)
        if self.tie_seed is None or self.tie_break >= NO_TIE_BREAK:
            return defer_mask(scores, self.threshold)
        if samples is None or len(samples) != len(scores):
            raise ValueError(f"this hop's certificate splits ties at threshold {self.threshold} by keys hashed from "
                             f"the samples (tie_seed={self.tie_seed}): pass the {len(scores)} samples (texts or "
                             f"feature rows), got {'none' if samples is None else len(samples)}")
        keys = keys_for_ties(scores, self.threshold, samples, self.tie_seed)
        return defer_mask(scores, self.threshold, self.tie_break, keys)

    def save(self, directory: str | Path) -> None:
        """Policy, threshold and certificate in one checksummed directory."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.policy.save(path / "policy")
        if self.certificate is not None:
            self.certificate.save(path / "certificate")
        has_certificate = self.certificate is not None
        write_json(path / HOP_FILE, HOP_KIND, {"threshold": self.threshold, "certificate": has_certificate})
        write_manifest(path, MANIFEST_KIND)

    @classmethod
    def load(cls, directory: str | Path) -> Hop:
        verify_manifest(directory, MANIFEST_KIND)
        path = Path(directory)
        body = read_json(path / HOP_FILE, HOP_KIND)
        certificate = Certificate.load(path / "certificate") if body.get("certificate") else None
        return cls(load_policy(path / "policy"), float(body["threshold"]), certificate)


class Cascade:
    """Tiers ordered by cost with one :class:`Hop` between consecutive tiers."""

    def __init__(self, hops: Sequence[Hop], tiers: Sequence[str] | None = None) -> None:
        if not hops:
            raise ValueError("a cascade needs at least one hop (two tiers)")
        self.hops = list(hops)
        self.tiers = list(tiers) if tiers is not None else [f"tier-{t}" for t in range(len(self.hops) + 1)]
        if len(self.tiers) != len(self.hops) + 1:
            raise ValueError(f"{len(self.hops)} hops connect {len(self.hops) + 1} tiers, got {len(self.tiers)} names")

    def route(self, tier_features: Sequence[ArrayLike], samples: Samples | None = None) -> np.ndarray:
        """Index of the tier that answers each sample, given every tier's features (the last may be omitted)
        and, for hops whose certificates split ties, the samples (see :meth:`Hop.defer`)."""
        if len(tier_features) < len(self.hops):
            raise ValueError(f"need features for the first {len(self.hops)} tiers, got {len(tier_features)}")
        answer = np.zeros(len(np.asarray(tier_features[0])), dtype=int)
        for h, hop in enumerate(self.hops):
            reaching = np.flatnonzero(answer == h)
            if len(reaching):
                features = np.asarray(tier_features[h])[reaching]
                answer[reaching[hop.defer(features, _take(samples, reaching))]] = h + 1
        return answer

    def evaluate(
        self,
        tier_features: Sequence[ArrayLike],
        tier_correct: Sequence[ArrayLike],
        tier_cost: Sequence[ArrayLike | float],
        samples: Samples | None = None,
    ) -> dict[str, Any]:
        """Accuracy, share of samples answered per tier and cost per 1k (a sample pays every tier it visits)."""
        answer = self.route(tier_features, samples)
        n = len(answer)
        correct = np.vstack([np.broadcast_to(np.asarray(c, dtype=float), n) for c in tier_correct])
        cost = np.cumsum(np.vstack([np.broadcast_to(np.asarray(c, dtype=float), n) for c in tier_cost]), axis=0)
        samples = np.arange(n)
        return {
            "accuracy": float(correct[answer, samples].mean()),
            "answered": dict(zip(self.tiers, (np.bincount(answer, minlength=len(self.tiers)) / n).tolist())),
            "cost_per_1k": float(1000.0 * cost[answer, samples].mean()),
        }

    @classmethod
    def tune(
        cls,
        policies: Sequence[PolicyBase],
        tuners: Sequence[BudgetTuner],
        tier_features: Sequence[ArrayLike],
        tier_correct: Sequence[ArrayLike],
        tier_cost: Sequence[ArrayLike | float] | None = None,
        tiers: Sequence[str] | None = None,
        samples: Samples | None = None,
        tie_seed: int | None = None,
    ) -> Cascade:
        """Fit each hop's rule on the calibration samples that reach it (policies already fitted).

        With ``samples`` and ``tie_seed``, each tuner breaks ties with the keys
        ``tie_keys(samples, tie_seed)`` of the samples reaching its hop, and its certificate records
        the rule; :meth:`route` then needs the same samples.
        """
        if len(policies) != len(tuners):
            raise ValueError(f"got {len(policies)} policies but {len(tuners)} tuners")
        if (samples is None) != (tie_seed is None):
            raise ValueError("samples and tie_seed go together: the tie keys are tie_keys(samples, tie_seed)")
        n = len(np.asarray(tier_features[0]))
        reaching = np.arange(n)
        hops = []
        for h, (policy, tuner) in enumerate(zip(policies, tuners)):
            if not len(reaching):
                raise ValueError(f"no calibration sample reaches hop {h}; loosen the earlier budgets")
            scores = policy.score(np.asarray(tier_features[h])[reaching])
            expert_cost = None
            if tier_cost is not None:
                expert_cost = np.broadcast_to(np.asarray(tier_cost[h + 1], dtype=float), n)[reaching]
            keys = None if tie_seed is None else tie_keys(_take(samples, reaching), tie_seed)
            tuner.fit(scores, np.asarray(tier_correct[h])[reaching], expert_cost, tie_keys=keys, tie_seed=tie_seed)
            hop = Hop(policy, tuner.threshold_, tuner.certificate_)
            hops.append(hop)
            reaching = reaching[defer_mask(scores, hop.threshold, hop.tie_break, keys)]
        return cls(hops, tiers)

    def save(self, directory: str | Path) -> None:
        """Every hop in ``hop-<h>/`` plus the tier names, checksummed."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        for h, hop in enumerate(self.hops):
            hop.save(path / f"hop-{h}")
        write_json(path / CASCADE_FILE, CASCADE_KIND, {"tiers": self.tiers})
        write_manifest(path, MANIFEST_KIND)

    @classmethod
    def load(cls, directory: str | Path) -> Cascade:
        verify_manifest(directory, MANIFEST_KIND)
        path = Path(directory)
        tiers = read_json(path / CASCADE_FILE, CASCADE_KIND)["tiers"]
        return cls([Hop.load(path / f"hop-{h}") for h in range(len(tiers) - 1)], tiers)


def _take(samples: Samples | None, index: np.ndarray) -> Samples | None:
    """The samples at ``index``, kept as the type they came in (so their tie keys do not change)."""
    if samples is None:
        return None
    if isinstance(samples, np.ndarray):
        return samples[index]
    return [samples[i] for i in index]
