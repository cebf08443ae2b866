"""Policies by name: the kinds of :class:`cascade.config.PolicyConfig`, built or loaded.

>>> import tempfile
>>> directory = tempfile.mkdtemp()
>>> ConfidencePolicy().save(directory)
>>> load_policy(directory)
ConfidencePolicy()

>>> make_policy("posthoc", model="gradient-boosting")
PosthocPolicy(model='gradient-boosting')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascade.artifact import ArtifactError
from policies.base import POLICY_FORMAT, PolicyBase
from policies.baselines import AlwaysPolicy, NeverPolicy, OraclePolicy, RandomPolicy
from policies.posthoc import PosthocPolicy
from policies.rules import ConfidencePolicy, EntropyPolicy, MarginPolicy

POLICIES: dict[str, type[PolicyBase]] = {
    policy.kind: policy
    for policy in (
        ConfidencePolicy, MarginPolicy, EntropyPolicy, PosthocPolicy,
        RandomPolicy, OraclePolicy, NeverPolicy, AlwaysPolicy,
    )
}


def make_policy(kind: str, n_classes: int | None = None, **params: Any) -> PolicyBase:
    """A new, unfitted policy of ``kind`` with hyper-parameters ``params``.

    ``n_classes`` (how many leading feature columns are class probabilities) is passed to the
    kinds that read probabilities and ignored by the baselines, which do not.
    """
    if kind not in POLICIES:
        raise ValueError(f"unknown policy kind '{kind}'; choose one of {sorted(POLICIES)}")
    if n_classes is not None and "n_classes" in POLICIES[kind]._get_param_names():
        params.setdefault("n_classes", n_classes)
    return POLICIES[kind](**params)


def load_policy(directory: str | Path) -> PolicyBase:
    """Load any saved policy, whatever its kind; a corrupt file raises ``ArtifactError`` naming it."""
    kind = PolicyBase.saved_kind(directory)
    if kind not in POLICIES:
        raise ArtifactError(f"{Path(directory) / POLICY_FORMAT.file}: unknown policy kind '{kind}'")
    return POLICIES[kind].load(directory)
