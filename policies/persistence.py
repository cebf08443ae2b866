"""Directories that hold a fitted policy, certificate, hop or cascade: JSON + skops, checksummed.

Every ``save`` writes its files, then a ``manifest.json`` with their SHA-256; every ``load``
verifies the manifest first, so a corrupt or edited file fails at load with its path in the
message (:class:`cascade.artifact.ArtifactError`). Nothing is unpickled: estimators go through
skops with the trusted-type list of :mod:`cascade.artifact`. Save each object into a directory of
its own.

>>> import tempfile
>>> from policies import ConfidencePolicy, load_policy
>>> d = tempfile.mkdtemp()
>>> ConfidencePolicy().save(d)
>>> type(load_policy(d)).__name__
'ConfidencePolicy'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascade.artifact import (
    ArtifactError,
    load_sklearn,
    read_json,
    save_sklearn,
    verify_manifest,
    write_json,
    write_manifest,
)

MANIFEST_KIND = "cascade.policies"
POLICY_FILE = "policy.json"
POLICY_KIND = "cascade.policy"


def prepare(directory: str | Path) -> Path:
    """Create ``directory`` (and parents) for a save."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seal(directory: str | Path) -> None:
    """Checksum every file written into ``directory``."""
    write_manifest(directory, MANIFEST_KIND)


def open_verified(directory: str | Path) -> Path:
    """Verify the manifest of a saved directory before anything in it is read."""
    verify_manifest(directory, MANIFEST_KIND)
    return Path(directory)


def write_policy(
    directory: str | Path,
    kind: str,
    params: dict[str, Any],
    state: dict[str, Any],
    estimators: dict[str, Any],
) -> None:
    """Write a policy's kind, hyper-parameters, JSON state and skops estimators, then seal."""
    path = prepare(directory)
    for name, estimator in estimators.items():
        save_sklearn(estimator, path / f"{name}.skops")
    write_json(
        path / POLICY_FILE,
        POLICY_KIND,
        {"kind": kind, "params": params, "state": state, "estimators": sorted(estimators)},
    )
    seal(path)


def read_policy(directory: str | Path) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Verify and read what :func:`write_policy` wrote: ``(kind, params, state, estimators)``."""
    path = open_verified(directory)
    body = read_json(path / POLICY_FILE, POLICY_KIND)
    names = body.get("estimators", [])
    if not all(isinstance(name, str) and name.isidentifier() for name in names):
        raise ArtifactError(f"{path / POLICY_FILE}: estimator names must be identifiers, got {names}")
    estimators = {name: load_sklearn(path / f"{name}.skops") for name in names}
    return body["kind"], dict(body.get("params", {})), dict(body.get("state", {})), estimators
