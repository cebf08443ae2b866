"""Safe, versioned files for everything cascade fits: no pickle of untrusted files.

* metadata: JSON with ``format`` and ``format_version`` fields;
* numeric arrays and torch weights: safetensors;
* scikit-learn estimators: skops, loaded only with an explicit list of trusted types.

Every file written through :func:`write_file_record` gets a SHA-256 in the directory's
``manifest.json``; :func:`verify_manifest` checks them at load time so a corrupt artifact fails
when it is loaded, never at the first request.

>>> import tempfile, numpy as np
>>> d = tempfile.mkdtemp()
>>> save_arrays({"w": np.ones(3)}, f"{d}/w.safetensors")
>>> load_arrays(f"{d}/w.safetensors")["w"].tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


class ArtifactError(RuntimeError):
    """An artifact file is missing, corrupt or of the wrong kind; the message names the file."""


def write_json(path: str | Path, kind: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON tagged with its kind and the format version."""
    body = {"format": kind, "format_version": FORMAT_VERSION, **payload}
    Path(path).write_text(json.dumps(body, indent=2, sort_keys=True, default=json_default))


def read_json(path: str | Path, kind: str) -> dict[str, Any]:
    """Read a JSON file written by :func:`write_json`, checking its kind and version."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a '{kind}' metadata file)")
    try:
        body = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt JSON ({exc})") from exc
    if not isinstance(body, dict) or body.get("format") != kind:
        found = body.get("format") if isinstance(body, dict) else type(body).__name__
        raise ArtifactError(f"{path}: expected format '{kind}', found '{found}'")
    if body.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format_version {body.get('format_version')} is not supported "
            f"(this cascade reads version {FORMAT_VERSION})"
        )
    return body


def save_arrays(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a safetensors file)")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several error types for bad headers
        raise ArtifactError(f"{path}: corrupt safetensors file ({exc})") from exc


def save_sklearn(estimator: Any, path: str | Path) -> None:
    import skops.io as sio

    sio.dump(estimator, str(path))


def load_sklearn(path: str | Path, trusted: tuple[str, ...] = ()) -> Any:
    """Load a skops file, trusting only types from scikit-learn, numpy and scipy, plus the exact
    type names in ``trusted`` (e.g. one PyOD detector class)."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (expected a skops file)")
    try:
        untrusted = sio.get_untrusted_types(file=str(path))
    except Exception as exc:
        raise ArtifactError(f"{path}: corrupt skops file ({exc})") from exc
    refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES) and t not in trusted]
    if refused:
        raise ArtifactError(f"{path}: refuses to load untrusted types {refused}")
    try:
        return sio.load(str(path), trusted=untrusted)
    except Exception as exc:
        raise ArtifactError(f"{path}: corrupt skops file ({exc})") from exc


_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.", "re.")


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | Path, kind: str, meta: dict[str, Any] | None = None) -> None:
    """Record a checksum of every file in ``directory`` (recursively) in its manifest."""
    directory = Path(directory)
    files = {
        str(p.relative_to(directory)): sha256(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    write_json(directory / MANIFEST, kind, {"files": files, "meta": meta or {}})


def verify_manifest(directory: str | Path, kind: str) -> dict[str, Any]:
    """Check every recorded checksum; return the manifest's ``meta``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: artifact directory does not exist")
    manifest = read_json(directory / MANIFEST, kind)
    for name, expected in manifest["files"].items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {MANIFEST} but missing")
        if sha256(path) != expected:
            raise ArtifactError(f"{path}: checksum mismatch (file is corrupt or was edited)")
    return dict(manifest.get("meta", {}))


def json_default(value: Any) -> Any:
    """``json.dumps``'s ``default`` for cascade's values: numpy scalars and arrays, paths.

    >>> json.dumps({"n": np.int64(3), "p": np.array([0.5])}, default=json_default)
    '{"n": 3, "p": [0.5]}'
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
