"""One way to save a fitted estimator and to say it is not fitted yet.

Detectors, calibrators, policies, policy features and the small tier all inherit :class:`Persistent`.
Each lists its learned attributes by storage: ``_json_state`` (JSON), ``_estimator_state``
(scikit-learn estimators, skops files), ``_array_state`` (numpy arrays, one safetensors file).
:meth:`Persistent.save` writes them with the hyper-parameters into one directory and seals it with a
manifest of SHA-256 checksums (of every file below it, nested estimators' files too);
:meth:`Persistent.load` verifies the manifest before reading anything and refuses a file of
another kind, missing or unexpected state, or bad parameters with an
:class:`~cascade.artifact.ArtifactError` naming the file. Nothing is unpickled.

:class:`NotFittedError` is scikit-learn's ``NotFittedError``, so sklearn tools recognise it.

>>> import tempfile
>>> from cascade.calibration import TemperatureScaling
>>> TemperatureScaling().save(tempfile.mkdtemp())
Traceback (most recent call last):
...
cascade.persistence.NotFittedError: TemperatureScaling is not fitted (missing ['n_classes_', 'temperature_']); call fit first
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from cascade.artifact import (
    ArtifactError,
    load_arrays,
    load_sklearn,
    read_json,
    save_arrays,
    save_sklearn,
    verify_manifest,
    write_json,
    write_manifest,
)

ARRAYS_FILE = "arrays.safetensors"


class NotFittedError(SklearnNotFittedError):
    """An estimator was used (or saved) before ``fit``; the message names it and what is missing."""


@dataclass(frozen=True)
class SavedFormat:
    """Where one family of estimators keeps its metadata: file name, JSON ``format`` and manifest kind."""

    family: str
    file: str
    kind: str
    manifest: str


class Persistent(BaseEstimator):
    """Base for sklearn-style estimators: ``save(directory)`` and the ``load(directory)`` classmethod.

    Subclasses set ``kind``, ``_format`` and their state lists; learned attributes in
    ``_optional_state`` may be absent (a rule policy that was never fitted). State that is neither
    JSON, an estimator nor an array (torch weights, an HF folder, estimators of their own) goes through
    the :meth:`_save_extra` / :meth:`_load_extra` hooks; hyper-parameters that are not JSON (estimators
    it is built from) through :meth:`_saved_params` / :meth:`_from_saved_params`.
    """

    kind: ClassVar[str]
    _format: ClassVar[SavedFormat]
    _json_state: ClassVar[tuple[str, ...]] = ()
    _estimator_state: ClassVar[tuple[str, ...]] = ()
    _array_state: ClassVar[tuple[str, ...]] = ()
    _optional_state: ClassVar[tuple[str, ...]] = ()

    def save(self, directory: str | Path) -> None:
        """Write hyper-parameters and learned state into ``directory`` (created), then seal it."""
        self._check_fitted()
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        present = [name for name in self._learned_state() if hasattr(self, name)]
        state = {name: getattr(self, name) for name in self._json_state if name in present}
        estimators = [name for name in self._estimator_state if name in present]
        arrays = [name for name in self._array_state if name in present]
        for name in estimators:
            save_sklearn(getattr(self, name), path / f"{name}.skops")
        if arrays:
            save_arrays({name: np.asarray(getattr(self, name)) for name in arrays}, path / ARRAYS_FILE)
        self._save_extra(path)
        write_json(path / self._format.file, self._format.kind, {
            "kind": self.kind, "params": self._saved_params(), "state": state,
            "estimators": estimators, "arrays": arrays,
        })
        write_manifest(path, self._format.manifest, {"kind": self.kind})

    @classmethod
    def load(cls, directory: str | Path) -> Self:
        """Load what :meth:`save` wrote; a corrupt, edited or mismatched file raises ``ArtifactError``."""
        path = Path(directory)
        body = cls._read(path)
        file = path / cls._format.file
        if body.get("kind") != cls.kind:
            raise ArtifactError(f"{file}: holds a '{body.get('kind')}' {cls._format.family}, not '{cls.kind}'")
        state = dict(body.get("state", {}))
        estimators = list(body.get("estimators", []))
        arrays = list(body.get("arrays", []))
        allowed = set(cls._learned_state())
        missing = sorted(allowed - set(cls._optional_state) - {*state, *estimators, *arrays})
        if missing:
            raise ArtifactError(f"{file}: missing {cls._format.family} state {missing}")
        unexpected = sorted(set(state) - set(cls._json_state) | set(estimators) - set(cls._estimator_state)
                            | set(arrays) - set(cls._array_state))
        if unexpected:
            raise ArtifactError(f"{file}: unexpected state {unexpected} for a '{cls.kind}' {cls._format.family}")
        try:
            loaded = cls._from_saved_params(path, dict(body.get("params", {})))
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{file}: bad parameters ({exc})") from exc
        for name, value in state.items():
            setattr(loaded, name, _from_json(value))
        for name in estimators:
            setattr(loaded, name, load_sklearn(path / f"{name}.skops"))
        if arrays:
            stored = load_arrays(path / ARRAYS_FILE)
            for name in arrays:
                if name not in stored:
                    raise ArtifactError(f"{path / ARRAYS_FILE}: missing array '{name}'")
                setattr(loaded, name, stored[name])
        loaded._load_extra(path)
        return loaded

    @classmethod
    def saved_kind(cls, directory: str | Path) -> str:
        """The ``kind`` recorded in a saved directory of this family (read, not yet verified)."""
        return str(read_json(Path(directory) / cls._format.file, cls._format.kind).get("kind"))

    @classmethod
    def _read(cls, path: Path) -> dict[str, Any]:
        verify_manifest(path, cls._format.manifest)
        return read_json(path / cls._format.file, cls._format.kind)

    @classmethod
    def _learned_state(cls) -> tuple[str, ...]:
        return (*cls._json_state, *cls._estimator_state, *cls._array_state)

    def _saved_params(self) -> dict[str, Any]:
        """Hook: the hyper-parameters as JSON (by default all of them, as ``get_params`` gives them)."""
        return self.get_params()

    @classmethod
    def _from_saved_params(cls, directory: Path, params: dict[str, Any]) -> Self:
        """Hook mirroring :meth:`_saved_params`: the unfitted estimator those parameters describe."""
        return cls(**params)

    def _save_extra(self, directory: Path) -> None:
        """Hook for state that is neither JSON, skops nor a plain array."""

    def _load_extra(self, directory: Path) -> None:
        """Hook mirroring :meth:`_save_extra`."""

    def _check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless every required learned attribute is set."""
        required = [name for name in self._learned_state() if name not in self._optional_state]
        check_fitted(self, required)


def check_fitted(estimator: object, attributes: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`NotFittedError` naming ``estimator`` and the ``attributes`` it lacks."""
    missing = sorted(name for name in attributes if not hasattr(estimator, name))
    if missing:
        raise NotFittedError(f"{type(estimator).__name__} is not fitted (missing {missing}); call fit first")


def _from_json(value: Any) -> Any:
    """Lists of numbers (or equal-length rows) come back as numpy arrays; anything else as read."""
    if not isinstance(value, list):
        return value
    try:
        array = np.asarray(value)
    except ValueError:  # ragged rows (e.g. per-class isotonic breakpoints) stay lists
        return value
    return value if array.dtype == object else array
