"""What ``GET /v1/budget`` says: a tenant's budget state and the guarantee that covers what is served now.

The state comes from the budget's holder (or the in-process controller); the guarantee from
:func:`policies.online.guarantee_now`, unless a monitor's alarm stands for the served certificate
(:mod:`deployments.keeper`): then ``in-doubt``, with the evidence.
"""

from __future__ import annotations

from typing import Any

from deployments.contracts import ServiceSettings
from deployments.schemas import BudgetState, GuaranteeNow


def budget_state(settings: ServiceSettings, state: dict[str, Any], tenant: str | None) -> BudgetState:
    """The body of ``GET /v1/budget`` for ``state`` (a controller's or the holder's)."""
    from policies.online import guarantee_now

    hard_cap = state["hard_cap"]
    watch = state.get("watch")
    certificate = watch["certificate"] if watch else settings.certificate
    guarantee = guarantee_now(settings.budget_kind, certificate, state)
    if watch and watch["status"] not in ("watching", "unwatched"):
        guarantee = in_doubt(watch, guarantee)
    return BudgetState(
        kind=settings.budget_kind, target=state["target"], realised_rate=state["realised_rate"],
        window=state["window"], observed=min(state["decisions"], state["window"]), threshold=state["threshold"],
        hard_cap=hard_cap, cap_remaining=state["cap_remaining"] if hard_cap is not None else None,
        capped=hard_cap is not None and state["cap_remaining"] == 0, certificate=certificate,
        guarantee=GuaranteeNow(**guarantee, certified_threshold=state["certified_threshold"]),
        served_rule="track" if state.get("adapt", True) else "certified",
        forced_in_window=state.get("forced_in_window", 0), forced_total=state.get("forced_total", 0),
        replicas=state.get("replicas"), watch=watch, resumed=state.get("resumed"), tenant=tenant,
        app_cap=state.get("app"), certificate_id=watch["certificate_id"] if watch else settings.certificate_id,
    )


def in_doubt(watch: dict[str, Any], guarantee: dict[str, str]) -> dict[str, str]:
    """The guarantee while a monitor's alarm stands: what was certified, and why it is in doubt."""
    alarmed = {name: m for name, m in watch["monitors"].items() if m["alarm"]}
    evidence = "; ".join(f"{name}: evidence {m['evidence']:.3g} ≥ {m['alarm_at_evidence']:.3g}"
                         + (f" (mean {m['mean']:.4g} against the bound {m['bound']:.4g})" if m["bound"] is not None
                            and m["mean"] is not None else "")
                         for name, m in alarmed.items())
    return {"status": "in-doubt", "statement": f"{watch['message']} ({evidence}); answers are flagged certified: false "
                                              f"until the alarm is resolved. Before the alarm: {guarantee['statement']}"}
