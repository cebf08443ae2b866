"""The interface every large-tier expert implements.

An expert takes texts (``list[str]``) or feature rows (a float array ``(n, d)``, serialised to
text for LLMs) and returns an :class:`~cascade.experts.result.ExpertResult`. Sync and async forms
give the same answer; experts are context managers that ``close()`` their engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol, Self, runtime_checkable

import numpy as np

from cascade.experts.result import ExpertResult, Explanation

ExpertInput = Sequence[str] | np.ndarray


@runtime_checkable
class Expert(Protocol):
    label_names: tuple[str, ...]

    def judge(self, X: ExpertInput) -> ExpertResult:
        """Label probabilities for every sample, with tokens, latency and cost."""
        ...

    async def ajudge(self, X: ExpertInput) -> ExpertResult:
        """Async :meth:`judge` for serving (does not block the event loop)."""
        ...

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """A short rationale for one sample, or the answer to a follow-up ``question``."""
        ...

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """Async :meth:`explain`."""
        ...

    def close(self) -> None:
        """Release the engine (idempotent)."""
        ...

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...


class InProcessExpert:
    """Shared plumbing of experts that compute in this process with nothing to release (the kNN vote,
    the CNN): the async forms run the sync ones in a worker thread; ``close`` does nothing."""

    def judge(self, X: ExpertInput) -> ExpertResult:
        raise NotImplementedError

    def explain(self, sample: str | np.ndarray, question: str | None = None,
                history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        raise NotImplementedError

    async def ajudge(self, X: ExpertInput) -> ExpertResult:
        """:meth:`judge` in a worker thread."""
        return await asyncio.to_thread(self.judge, X)

    async def aexplain(self, sample: str | np.ndarray, question: str | None = None,
                       history: list[dict[str, str]] | None = None, label: str | None = None) -> Explanation:
        """:meth:`explain` in a worker thread."""
        return await asyncio.to_thread(self.explain, sample, question, history, label)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
