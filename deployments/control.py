"""Who may change the running app: a bearer token, checked in constant time.

The token comes from the environment variable ``serve.control.token_env`` or, if set, the file
``serve.control.token_file``; it is read once where the app is built and only its SHA-256 digest
travels to the router replicas. With no token configured, mutations are refused (403) unless
``serve.control.allow_unauthenticated`` is set for local use.

>>> access = ControlAccess.from_token("s3cret")
>>> access.refusal("Bearer s3cret") is None
True
>>> access.refusal("Bearer guess").status
401
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from cascade.config import ConfigError, ControlConfig, TenantConfig

_SCHEME = "bearer "


@dataclass(frozen=True)
class Refusal:
    """Why a mutation is refused: the status (401 or 403), a code and a message."""

    status: int
    error: str
    message: str


@dataclass(frozen=True)
class ControlAccess:
    """The digest of the control token (``None``: no token) and whether mutations need one."""

    token_digest: bytes | None
    allow_unauthenticated: bool = False
    section: str = "control"
    """the config section the token belongs to (``control`` or ``feedback``), named in refusals"""

    @classmethod
    def from_token(cls, token: str | None, allow_unauthenticated: bool = False, section: str = "control") -> ControlAccess:
        digest = hashlib.sha256(token.encode()).digest() if token else None
        return cls(token_digest=digest, allow_unauthenticated=allow_unauthenticated, section=section)

    @classmethod
    def from_config(cls, control: ControlConfig, section: str = "control") -> ControlAccess:
        """Read the token from ``control.token_file`` (when set) or the ``control.token_env`` variable."""
        if control.token_file is not None:
            path = Path(control.token_file)
            if not path.is_file():
                raise ConfigError(f"serve.{section}.token_file: no such file {path}")
            token = path.read_text(encoding="utf-8").strip()
            if not token:
                raise ConfigError(f"serve.{section}.token_file: {path} is empty")
        else:
            token = os.environ.get(control.token_env, "").strip()
        return cls.from_token(token or None, control.allow_unauthenticated, section)

    def refusal(self, authorization: str | None) -> Refusal | None:
        """``None`` when a request with this ``Authorization`` header may mutate, else why not."""
        if self.token_digest is None:
            if self.allow_unauthenticated:
                return None
            where = f"serve.{self.section}"
            return Refusal(403, "forbidden", f"disabled: no {self.section} token is configured (set the token's "
                                             f"environment variable or {where}.token_file; "
                                             f"{where}.allow_unauthenticated: true for local use only)")
        if not authorization or not authorization.lower().startswith(_SCHEME):
            return Refusal(401, "unauthorized", "this request needs 'Authorization: Bearer <token>'")
        presented = hashlib.sha256(authorization[len(_SCHEME):].strip().encode()).digest()
        if not hmac.compare_digest(presented, self.token_digest):
            return Refusal(401, "unauthorized", f"the bearer token is not the {self.section} token")
        return None


@dataclass(frozen=True)
class TenantAccess:
    """Which tenant a bearer token belongs to (digests only); empty: the app has no tenants.

    >>> access = TenantAccess.from_tokens({"shop": "t-shop", "bank": "t-bank"})
    >>> access.tenant_of("Bearer t-bank"), access.tenant_of("Bearer nope"), access.tenant_of(None)
    ('bank', None, None)
    """

    digests: tuple[tuple[bytes, str], ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    @classmethod
    def from_tokens(cls, tokens: dict[str, str]) -> TenantAccess:
        seen: dict[str, str] = {}
        for name, token in tokens.items():
            if token in seen:
                raise ConfigError(f"serve.tenants: tenants '{seen[token]}' and '{name}' have the same token; each "
                                  "token must pick one tenant")
            seen[token] = name
        return cls(tuple((hashlib.sha256(token.encode()).digest(), name) for name, token in tokens.items()))

    @classmethod
    def from_config(cls, tenants: list[TenantConfig]) -> TenantAccess:
        """Read each tenant's token (its file, or its environment variable); a missing one is a ConfigError."""
        tokens = {}
        for i, tenant in enumerate(tenants):
            if tenant.token_file is not None:
                path = Path(tenant.token_file)
                token = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
                where = f"serve.tenants.{i}.token_file: {path}"
            else:
                token = os.environ.get(tenant.token_env or "", "").strip()
                where = f"serve.tenants.{i}.token_env: ${tenant.token_env}"
            if not token:
                raise ConfigError(f"{where} gives no token for tenant '{tenant.name}'")
            tokens[tenant.name] = token
        return cls.from_tokens(tokens)

    def tenant_of(self, authorization: str | None) -> str | None:
        """The tenant whose token ``authorization`` carries (``None`` when none does)."""
        if not authorization or not authorization.lower().startswith(_SCHEME):
            return None
        presented = hashlib.sha256(authorization[len(_SCHEME):].strip().encode()).digest()
        found = None
        for digest, name in self.digests:  # compare with every token: the time does not say which matched
            if hmac.compare_digest(presented, digest):
                found = name
        return found
