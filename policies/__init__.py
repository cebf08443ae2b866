"""Deferral policies, budget tuners with statistical guarantees, and online deferral control.

Everything works on numpy arrays (no Ray, no vLLM), so it is testable in milliseconds. A sample
is deferred to the next tier when ``score > threshold``, or, tied with it, when its tie key says so
(:mod:`policies.ties`: one rule for tuning, harness and serving).

>>> import numpy as np
>>> from policies import ConfidencePolicy, RateTuner, simulate
>>> calibration = simulate(1000, seed=1)
>>> policy = ConfidencePolicy(n_classes=2)
>>> tuner = RateTuner(target=0.15).fit(policy.score(calibration.features))
>>> tuner.certificate_.guarantee
'in expectation'
"""

from policies.base import DeferralPolicy, PolicyBase
from policies.baselines import AlwaysPolicy, NeverPolicy, OraclePolicy, RandomPolicy, deferral_gain
from policies.certificate import Certificate, InfeasibleTarget
from policies.chain_rule import ChainRule
from policies.evaluation import Adherence, budget_adherence, deferral_curve, random_splits
from policies.learned import LearnedPolicy, deferral_area, expected_deferral_gain
from policies.online import OnlineController, guarantee_now
from policies.posthoc import PosthocPolicy
from policies.registry import POLICIES, load_policy, make_policy
from policies.rules import ConfidencePolicy, EntropyPolicy, MarginPolicy, uncertainty_features
from policies.simulate import DeferralData, simulate
from policies.tiers import Cascade, Hop
from policies.ties import defer_mask, tie_keys
from policies.tuners import (
    AcceptedErrorTuner,
    BudgetTuner,
    CostTuner,
    JointTuner,
    RateTuner,
    clopper_pearson_upper,
    make_tuner,
    threshold_grid,
)

__all__ = [
    "AcceptedErrorTuner", "Adherence", "AlwaysPolicy", "BudgetTuner", "Cascade", "Certificate", "ChainRule",
    "ConfidencePolicy", "CostTuner", "DeferralData", "DeferralPolicy", "EntropyPolicy", "Hop",
    "InfeasibleTarget", "JointTuner", "LearnedPolicy", "MarginPolicy", "NeverPolicy", "OnlineController",
    "OraclePolicy", "POLICIES", "PolicyBase", "PosthocPolicy", "RandomPolicy", "RateTuner",
    "budget_adherence", "clopper_pearson_upper", "defer_mask", "deferral_area", "deferral_curve", "deferral_gain",
    "expected_deferral_gain", "guarantee_now", "load_policy", "make_policy", "make_tuner", "random_splits",
    "simulate", "threshold_grid", "tie_keys", "uncertainty_features",
]
