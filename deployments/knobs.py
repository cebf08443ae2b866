"""Runtime knobs: the settings a running app takes through Serve's ``user_config`` (``reconfigure``),
so ``serve deploy`` with a changed ``deployments:`` section updates replicas in place.

A ``user_config`` is shaped like the :class:`~cascade.config.CascadeConfig` sections it changes, and
is checked by those sections' own pydantic models; anything else is refused with its field path:

* ``CascadeRouter``: ``serve.router_batch_wait_timeout_s``, ``serve.max_batch_size``,
  ``serve.expert_timeout_s``, ``serve.readiness_timeout_s``, ``serve.breaker``;
* ``BudgetHolder``: ``budget.target`` (a declared target: applied when it changes, so a later
  ``PUT /v1/budget`` is kept across holder restarts until the declaration changes again).

>>> from cascade.config import CascadeConfig
>>> config = CascadeConfig.model_validate({"dataset": {"name": "spamassassin"}})
>>> with_knobs(config, {"serve": {"expert_timeout_s": 5}}, ROUTER_KNOBS).serve.expert_timeout_s
5.0
>>> with_knobs(config, {"serve": {"port": 80}}, ROUTER_KNOBS)
Traceback (most recent call last):
...
cascade.config.ConfigError: user_config.serve.port: not a runtime knob here; runtime knobs: serve.router_batch_wait_timeout_s, serve.max_batch_size, serve.expert_timeout_s, serve.readiness_timeout_s, serve.breaker
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from cascade.config import CascadeConfig, ConfigError

Knobs = dict[str, tuple[str, ...]]
ROUTER_KNOBS: Knobs = {"serve": ("router_batch_wait_timeout_s", "max_batch_size", "expert_timeout_s",
                                 "readiness_timeout_s", "breaker")}
HOLDER_KNOBS: Knobs = {"budget": ("target",)}


def router_user_config(config: CascadeConfig) -> dict[str, Any]:
    """The router's knobs as ``config`` sets them: the ``user_config`` it starts with."""
    return {section: getattr(config, section).model_dump(mode="json", include=set(fields))
            for section, fields in ROUTER_KNOBS.items()}


def with_knobs(config: CascadeConfig, user_config: Any, knobs: Knobs) -> CascadeConfig:
    """``config`` with ``user_config`` applied, each section re-validated by its own model;
    :class:`~cascade.config.ConfigError` names ``user_config.<section>.<field>`` for anything wrong."""
    if not isinstance(user_config, dict):
        raise ConfigError(f"user_config: must be a mapping of config sections, got {type(user_config).__name__}")
    allowed = ", ".join(f"{section}.{field}" for section, fields in knobs.items() for field in fields)
    update: dict[str, BaseModel] = {}
    for section, values in user_config.items():
        if section not in knobs:
            raise ConfigError(f"user_config.{section}: not a runtime knob here; runtime knobs: {allowed}")
        if not isinstance(values, dict):
            raise ConfigError(f"user_config.{section}: must be a mapping, got {type(values).__name__}")
        for field in values:
            if field not in knobs[section]:
                raise ConfigError(f"user_config.{section}.{field}: not a runtime knob here; runtime knobs: {allowed}")
        current: BaseModel = getattr(config, section)
        try:
            update[section] = type(current).model_validate({**current.model_dump(), **values})
        except ValidationError as exc:
            problems = "; ".join(f"user_config.{section}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                                 for err in exc.errors())
            raise ConfigError(problems) from None
    return config.model_copy(update=update)
