"""How often each certify part has been used to tune, so that a second look at it is refused or paid for.

A certificate covers one tuning on its certify part. Tuning the same part again (another target,
policy or δ) and keeping what looks best is a second look that no single certificate covers. With
probability bounds a union (Bonferroni) bound does: after tunings with ``δ_1 … δ_k`` every bound
certified on the part holds, all together, with probability ≥ 1 - Σ δ_i, so each use *spends* its δ.
In-expectation (conformal) bounds have no such sum: repeated in-expectation tunings on one part are
not covered.

The ledger keeps, per certify part (keyed by a content hash of its samples), the distinct tunings
made on it and the δ each spent, in one small JSON file per part under
``$CASCADE_HOME/cache/certify-uses/``. A tuning is named by a hash of everything that decides its
outcome (not where its artifact is written): re-running an identical tuning is deterministic,
reveals nothing new about the part, and is counted once. A tuning counts from the moment it looks
at the part's scores, whether or not it finds a threshold.

>>> import tempfile
>>> from pathlib import Path
>>> ledger = CertifyLedger(Path(tempfile.mkdtemp()))
>>> ledger.record("part-1", "the toy certify part", "tuning-a", delta=0.05, reuse="refuse", artifact="a").uses
1
>>> ledger.record("part-1", "the toy certify part", "tuning-b", delta=0.05, reuse="spend-delta", artifact="b")
Spent(uses=2, delta_spent=0.1, uncovered=0)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from cascade.artifact import read_json, write_json
from cascade.config import ConfigError
from cascade.paths import cache_dir
from policies.certificate import CertificateBase

C = TypeVar("C", bound=CertificateBase)

CertifyReuse = Literal["refuse", "spend-delta"]
LEDGER_KIND = "cascade.certify-uses"


class CertifyPartReused(ConfigError):
    """A different tuning on a certify part already used to tune, with ``budget.certify_reuse: refuse``."""


@dataclass(frozen=True)
class Spent:
    """What the tunings of one certify part have spent, this one included."""

    uses: int
    """distinct tunings on the part"""
    delta_spent: float | None
    """Σ δ over its tunings with a δ; None when this tuning is in expectation (there is no δ to spend)"""
    uncovered: int
    """other tunings on the part that were in expectation: no δ sum covers them"""

    def apply(self, certificate: C) -> C:
        """``certificate`` with ``certify_uses``, ``delta_spent`` and, after a reuse, what it means in the statement."""
        statement = certificate.statement
        if self.uses > 1 and self.delta_spent is None:
            statement += (f"; this certify part was used for {self.uses} tunings and repeated in-expectation "
                          "tunings on one part are not covered: the bound does not hold for one chosen among them")
        elif self.uses > 1:
            statement += (f"; this certify part was used for {self.uses} tunings: with probability ≥ "
                          f"{1 - self.delta_spent:.6g} their bounds hold together (δ spent {self.delta_spent:.6g}, "
                          "Bonferroni)")
            if self.uncovered:
                statement += f", except {self.uncovered} in-expectation tuning(s) it does not cover"
        return certificate.model_copy(update={"certify_uses": self.uses, "delta_spent": self.delta_spent,
                                              "statement": statement})


class CertifyLedger:
    """The uses of each certify part, one JSON file per part in ``directory`` (default: the cache home's)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else cache_dir("certify-uses")

    def uses(self, part: str) -> list[dict[str, Any]]:
        """The tunings recorded on ``part``, oldest first: ``tuning``, ``delta``, ``artifact``, ``at``."""
        path = self._path(part)
        return list(read_json(path, LEDGER_KIND)["uses"]) if path.is_file() else []

    def check(self, part: str, label: str, tuning: str, reuse: CertifyReuse) -> None:
        """Raise :class:`CertifyPartReused` if ``tuning`` is a second look at ``part`` and ``reuse`` refuses it."""
        earlier = [use for use in self.uses(part) if use["tuning"] != tuning]
        if earlier and reuse == "refuse":
            raise CertifyPartReused(_refusal(label, earlier))

    def record(self, part: str, label: str, tuning: str, delta: float | None, reuse: CertifyReuse,
               artifact: str) -> Spent:
        """Count ``tuning`` on ``part`` (once, however often it is re-run) and return what the part has spent."""
        self.check(part, label, tuning, reuse)
        uses = self.uses(part)
        if all(use["tuning"] != tuning for use in uses):
            uses.append({"tuning": tuning, "delta": delta, "artifact": artifact,
                         "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            self._save(part, label, uses)
        spent = sum(use["delta"] for use in uses if use["delta"] is not None)
        uncovered = sum(use["delta"] is None for use in uses if use["tuning"] != tuning)
        return Spent(uses=len(uses), delta_spent=None if delta is None else float(spent), uncovered=uncovered)

    def _path(self, part: str) -> Path:
        return Path(self.directory) / f"{part}.json"

    def _save(self, part: str, label: str, uses: list[dict[str, Any]]) -> None:
        path = self._path(part)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".json.partial")
        write_json(staging, LEDGER_KIND, {"part": part, "label": label, "uses": uses})
        os.replace(staging, path)


def _refusal(label: str, earlier: list[dict[str, Any]]) -> str:
    shown = "; ".join(f"{use['artifact']} at {use['at']}, "
                      f"{'in expectation' if use['delta'] is None else 'δ=' + format(use['delta'], 'g')}"
                      for use in earlier[-3:])
    more = f" and {len(earlier) - 3} more" if len(earlier) > 3 else ""
    return (f"budget.certify_reuse: {label} was already used to tune {len(earlier)} time(s) ({shown}{more}); another "
            "tuning on it is not covered by one certificate (nor are repeated in-expectation tunings): set "
            "budget.certify_reuse: spend-delta to tune again and state the δ spent on the part (Bonferroni), or "
            "certify on fresh labelled data")
