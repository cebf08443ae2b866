"""An expert whose label probabilities are calibrated on labelled samples no certificate ever sees.

The expert judges its own labelled pool (the setting's labelled training samples,
:func:`cascade.data.roles.labelled_pool`) with each sample's own label out of reach: a retrieving
expert (few-shot LLM, kNN vote) retrieves leave-one-out
(:meth:`~cascade.experts.retrieval.NeighbourRetriever.leaving_out_self`); an expert without
retrieval judges the samples as they are. One of the project's calibrators (temperature, Platt,
isotonic: :mod:`cascade.calibration`) is fitted on those probabilities and the pool's labels. The
fit, certify and test parts are not read, so certificates stay valid; the extra calls and tokens
are counted (:class:`CalibrationUsage`). A CNN expert is trained on that pool, so its scores there
are not held out: it is not calibrated this way (the config refuses it).

>>> with leaving_out_self(expert):                                         # doctest: +SKIP
...     on_pool = expert.judge(pool.X)
>>> calibrator = fit_expert_calibrator("platt", on_pool.probs, pool.y)      # doctest: +SKIP
>>> served = CalibratedExpert(expert, calibrator)                          # doctest: +SKIP
>>> served.judge(["Cheap meds, click now"]).probs                          # doctest: +SKIP
array([[0.07, 0.93]])
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any, Self

import numpy as np

from cascade.calibration import CalibratorBase, make_calibrator
from cascade.experts.protocol import Expert, ExpertInput
from cascade.experts.result import ExpertResult, Explanation

FITTED_ON = ("the labelled pool (all of it, or a seeded uniform draw of expert.calibration_samples), each sample "
             "judged with its own label out of retrieval (leave-one-out)")


@dataclass(frozen=True)
class CalibrationUsage:
    """What judging the pool cost: calls, tokens and cost units (the same units as serving)."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost: float

    @classmethod
    def of(cls, result: Any) -> CalibrationUsage:
        """From an :class:`ExpertResult` or :class:`~cascade.scoring.TierScores` of the pool."""
        return cls(calls=len(result.probs), prompt_tokens=int(np.sum(result.prompt_tokens)),
                   completion_tokens=int(np.sum(result.completion_tokens)), cost=float(np.sum(result.cost)))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def leaving_out_self(expert: Expert) -> AbstractContextManager[Any]:
    """A block in which ``expert`` judging its own pool samples never retrieves the sample itself (see
    :meth:`~cascade.experts.retrieval.NeighbourRetriever.leaving_out_self`); nothing changes for an
    expert that retrieves nothing."""
    retriever = getattr(expert, "retriever", None)
    return retriever.leaving_out_self() if retriever is not None else nullcontext()


def fit_expert_calibrator(kind: str, probs: np.ndarray, y: np.ndarray) -> CalibratorBase:
    """A fitted calibrator of ``kind`` for the expert's ``(n, k)`` probabilities on the pool."""
    y = np.asarray(y)
    if len(y) == 0:
        raise ValueError("calibrating the expert needs labelled pool samples; the pool is empty")
    return make_calibrator(kind).fit(np.asarray(probs, dtype=np.float64), y)


class CalibratedExpert:
    """``expert`` with its label probabilities passed through ``calibrator``; tokens, cost, latency and
    rationales unchanged. The answer is the calibrated probabilities' most likely label."""

    def __init__(self, expert: Expert, calibrator: CalibratorBase) -> None:
        self.expert = expert
        self.calibrator = calibrator
        self.label_names = expert.label_names

    def _calibrated(self, result: ExpertResult) -> ExpertResult:
        if len(result) == 0:
            return result
        return replace(result, probs=self.calibrator.transform(result.probs))

    def judge(self, X: ExpertInput) -> ExpertResult:
        return self._calibrated(self.expert.judge(X))

    async def ajudge(self, X: ExpertInput) -> ExpertResult:
        return self._calibrated(await self.expert.ajudge(X))

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        return self.expert.explain(sample, question=question, history=history, label=label)

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        return await self.expert.aexplain(sample, question=question, history=history, label=label)

    def start(self) -> None:
        getattr(self.expert, "start", lambda: None)()

    async def astart(self) -> None:
        start = getattr(self.expert, "astart", None)
        if start is not None:
            await start()

    def close(self) -> None:
        self.expert.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
