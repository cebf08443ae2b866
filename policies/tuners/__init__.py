"""Budget tuners: pick a deferral threshold on a certify part and certify what it guarantees.

A sample is deferred when ``score > threshold``, or tied with it and its tie key above the tie cut
(:func:`policies.ties.defer_mask`). Every tuner follows the sklearn
pattern: construct with the target, ``fit(scores, small_correct=None, expert_cost=None)`` on the
certify part, read ``threshold_`` and ``certificate_``. Targets that cannot be met raise
:class:`~policies.certificate.InfeasibleTarget` with the best achievable value.

==================  ==============================================  =================================
tuner               method                                          guarantee (new exchangeable data)
==================  ==============================================  =================================
RateTuner           conformal risk control (split-conformal         E[defer_rate] ≤ β
                    quantile) on the deferral indicator
RateTuner(delta=δ)  Clopper-Pearson bound = fixed-sequence test     P(defer_rate > β) ≤ δ
CostTuner           conformal risk control on the bounded           E[cost_per_1k] ≤ target
                    per-request cost
AcceptedErrorTuner  Learn-then-Test, binomial p-values, Bonferroni  P(accepted_error > α) ≤ δ
                    over a grid fixed before certification
JointTuner          Learn-then-Test: fixed-sequence (rate family,   P(accepted_error > α or
                    then error family, δ/2 each) or Bonferroni      defer_rate > β) ≤ δ
==================  ==============================================  =================================

Probabilities are over the draw of the certify part. ``fit_thresholds`` runs the same
procedure on many certify sets at once (rows of a 2-D array), which is how
:func:`policies.evaluation.budget_adherence` checks the guarantees over hundreds of splits.

>>> import numpy as np
>>> scores = np.random.default_rng(0).random(999)
>>> tuner = RateTuner(target=0.2).fit(scores)
>>> tuner.certificate_.achieved["defer_rate"] <= 0.2
True
"""

from policies.tuners.base import BudgetTuner
from policies.tuners.bounds import binomial_p_value, clopper_pearson_upper
from policies.tuners.conformal import CostTuner, RateTuner
from policies.tuners.factory import budget_grid, make_tuner
from policies.tuners.joint import JointTuner
from policies.tuners.ltt import AcceptedErrorTuner
from policies.tuners.risks import Grid, threshold_grid

__all__ = [
    "AcceptedErrorTuner", "BudgetTuner", "CostTuner", "Grid", "JointTuner", "RateTuner", "binomial_p_value",
    "budget_grid", "clopper_pearson_upper", "make_tuner", "threshold_grid",
]
