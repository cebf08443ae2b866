"""The certified chain rule a served N-tier cascade routes by, hop by hop, saved checksummed.

Tier ``0`` is the small tier, tiers ``1 … K-1`` are ``tiers`` (cheapest first). The rule
``(t_0, …, t_{K-2}, a)`` has one threshold per tier: tier ``k < K-1`` answers a sample reaching it
when its deferral score ``s_k ≤ t_k`` (:meth:`ChainRule.stays`) and hands it on otherwise; the last
tier answers when ``s_{K-1} ≤ a`` and otherwise abstains (:meth:`ChainRule.abstains`). Scores and
thresholds compare on :func:`policies.ties.canonical`'s grid, as in
:func:`policies.tuners.chain.apply_chain`, so routing hop by hop routes as the tuner certified.

>>> import numpy as np
>>> from policies.tuners.chain import ChainGrid, ChainTuner
>>> rng = np.random.default_rng(0)
>>> def draw(n):
...     hard = rng.random((n, 1))
...     return hard + rng.normal(0, 0.1, (n, 3)), rng.random((n, 3)) > hard * np.array([0.4, 0.2, 0.1])
>>> fit_scores, fit_correct = draw(2000)
>>> grid = ChainGrid.from_fit(fit_scores, 4, 0.2, fit_correct=fit_correct, costs=[0.0, 1.0, 5.0])
>>> tuner = ChainTuner(alpha=0.1, max_abstention=0.1, grid=grid).fit(*draw(2000), [0.0, 1.0, 5.0])
>>> chain = ChainRule(("vote", "llm"), tuner.rule_, tuner.certificate_)
>>> chain.rule.round(3).tolist(), chain.stays(0, [0.1, 0.9]).tolist(), chain.abstains([0.1, 0.9]).tolist()
([0.327, 0.662, inf], [True, False], [False, False])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from cascade.artifact import ArtifactError, read_json, verify_manifest, write_json, write_manifest
from policies.base import MANIFEST_KIND
from policies.ties import canonical
from policies.tuners.chain import ChainCertificate

CHAIN_FILE, CHAIN_KIND = "chain.json", "cascade.chain-rule"
CHAIN_DIR = "chain"
"""where a chain artifact keeps the certified rule"""
EXPERT_CALIBRATORS_DIR = "expert_calibrators"
"""where a chain artifact keeps each tier's calibrator, one folder per tier name"""


@dataclass(frozen=True, eq=False)
class ChainRule:
    """The tiers after the small one, the rule ``(K,)`` (``K = 1 + len(tiers)``) and the certificate it passed."""

    tiers: tuple[str, ...]
    rule: np.ndarray
    certificate: ChainCertificate

    def __post_init__(self) -> None:
        rule = canonical(np.asarray(self.rule, dtype=float))
        tiers = tuple(self.tiers)
        if rule.shape != (len(tiers) + 1,) or np.isnan(rule).any():
            raise ValueError(f"a chain of the small tier and {len(tiers)} tiers {list(tiers)} has a rule of "
                             f"{len(tiers) + 1} thresholds without NaN, got {rule.tolist()}")
        passed = canonical(np.asarray(self.certificate.passed_rules, dtype=float).reshape(-1, len(rule)))
        if not (passed == rule).all(axis=1).any():
            raise ValueError(f"the rule {rule.tolist()} is not among the rules its certificate passed")
        object.__setattr__(self, "tiers", tiers)
        object.__setattr__(self, "rule", rule)

    def stays(self, hop: int, scores: ArrayLike) -> np.ndarray:
        """Whether tier ``hop`` (0: the small tier) answers the samples reaching it with deferral ``scores``."""
        if not 0 <= hop < len(self.rule):
            raise ValueError(f"hop {hop} is not a tier of this chain (0 to {len(self.rule) - 1})")
        return canonical(np.asarray(scores, dtype=float)) <= self.rule[hop]

    def abstains(self, scores: ArrayLike) -> np.ndarray:
        """Whether the last tier abstains (human review) on the samples reaching it with deferral ``scores``."""
        return ~self.stays(len(self.rule) - 1, scores)

    def save(self, directory: str | Path) -> None:
        """Tiers, rule and certificate in ``chain.json``, sealed by a checksum manifest."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / CHAIN_FILE, CHAIN_KIND, {"tiers": list(self.tiers), "rule": self.rule.tolist(),
                                                   "certificate": self.certificate.model_dump(mode="json")})
        write_manifest(path, MANIFEST_KIND)

    @classmethod
    def load(cls, directory: str | Path, tiers: Sequence[str] | None = None) -> ChainRule:
        """Load what :meth:`save` wrote; a missing, corrupt or edited file, or one for other ``tiers`` (when
        given), raises :class:`~cascade.artifact.ArtifactError` naming it."""
        verify_manifest(directory, MANIFEST_KIND)
        path = Path(directory) / CHAIN_FILE
        body = read_json(path, CHAIN_KIND)
        try:
            chain = cls(tuple(body["tiers"]), np.asarray(body["rule"], dtype=float),
                        ChainCertificate.model_validate(body["certificate"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: not a valid chain rule ({exc})") from exc
        if tiers is not None and chain.tiers != tuple(tiers):
            raise ArtifactError(f"{path}: a rule for the tiers {list(chain.tiers)}, the config has {list(tiers)}; "
                                "re-run `cascade tune`")
        return chain
