"""`cascade init DATA_FILE --label COLUMN`: a commented starter config for a user's own file.

The file's columns are inferred (:mod:`cascade.data.columns`) and the config picks what fits:
TF-IDF logistic regression for text, gradient boosting (logistic regression under
``SMALL_TABLE`` rows) for tables, Platt calibration for two classes and temperature scaling for
more, and the no-LLM ``knn-vote`` expert so the first run needs no model download. The written
file is validated before it is returned, so ``cascade experiment run`` accepts it as is.
:func:`starter_summary` is the line ``cascade init`` prints (and the config's comment): what was
inferred, and how the chosen detector handles the missing values.

>>> print(starter_config("wine.csv", label_column="target"))   # doctest: +SKIP
# cascade starter config for wine.csv, written by `cascade init`.
...
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from cascade.config import CascadeConfig
from cascade.data.columns import FileSchema
from cascade.data.files import file_format, inspect_file

SMALL_TABLE = 1000
_SHOTS = 8


def starter_config(data_file: str | Path, label_column: str = "label", positive_label: str | None = None,
                   name: str | None = None, config_file: str = "cascade.yaml") -> str:
    """The YAML text of a valid, commented config for ``data_file`` (paths kept as given), to be
    saved as ``config_file`` (named in its comments)."""
    schema = inspect_file(data_file, label_column=label_column, positive_label=positive_label)
    name = name or _slug(Path(data_file).stem)
    binary = len(schema.label_names) == 2
    detector, why = _detector(schema)
    calibrator = "platt" if binary else "temperature"
    dataset = {"name": file_format(data_file), "path": str(data_file), "label_column": label_column}
    if positive_label is not None:
        dataset["positive_label"] = positive_label
    labels = _flow(list(schema.label_names))
    pyod_hint = ("\n  # kind: pyod, params: {model: ECOD} fits any PyOD detector on normal rows only (two classes)"
                 if schema.modality == "features" else "")
    text = f"""# cascade starter config for {data_file}, written by `cascade init`.
# {_summary(schema, detector)}
# Run:  cascade experiment run {config_file}    (frontier plots + report under results/{name}/)
#       cascade serve {config_file} --tune        (tune the budget, then serve it over HTTP)
name: {name}
artifact_dir: artifacts/{name}
dataset:
{_block(dataset)}
  # text_column: ...            # columns were inferred (see above); name them to choose yourself
  # feature_columns: [...]      # string columns listed here are one-hot encoded
  # positive_label: ...         # make one class the anomaly class (a binary task)
  # max_samples: 5000           # stratified subsample for quick runs
detector:
  kind: {detector}   # {why}
  # other detectors for {schema.modality}: {_others(schema.modality, detector)}{pyod_hint}
calibrator:
  kind: {calibrator}   # fitted on the calibration split; platt / isotonic / temperature
expert:
  # The expert answers what the detector defers. knn-vote needs no LLM: a similarity-weighted
  # vote of the {_SHOTS} most similar labelled training samples. For an LLM on vLLM use
  #   kind: vllm, model: smollm2-135m-instruct (cascade models fetch), shots: 4
  # and keep this vote as control_expert, so the report shows what the LLM adds.
  kind: knn-vote
  labels: {labels}   # one word per class, in this order
  shots: {_SHOTS}
policy:
  kind: confidence   # defer the samples whose calibrated top probability is lowest
budget:
  kind: rate
  target: 0.2        # send at most 20% of samples to the expert (in expectation)
experiment:
  seed: 0
  results_dir: results
"""
    CascadeConfig.from_dict(yaml.safe_load(text), source=f"starter config for {data_file}")
    return text


def starter_summary(data_file: str | Path, label_column: str = "label", positive_label: str | None = None) -> str:
    """The one line ``cascade init`` prints: rows, label and classes, feature or text columns, and
    the missing values with what the starter's detector does with them."""
    schema = inspect_file(data_file, label_column=label_column, positive_label=positive_label)
    return _summary(schema, _detector(schema)[0])


def _detector(schema: FileSchema) -> tuple[str, str]:
    """The starter's detector kind for ``schema`` and why (for the config's comment)."""
    if schema.modality == "text":
        return "tfidf-lr", "TF-IDF + logistic regression on the text column"
    if schema.n_rows < SMALL_TABLE:
        return "tabular-lr", "standardised features + logistic regression (few rows)"
    return "tabular-hgb", "histogram gradient boosting on the feature columns"


def _summary(schema: FileSchema, detector: str) -> str:
    from cascade.detectors import detector_class

    handling = detector_class(detector).missing_values if schema.modality == "features" else None
    return schema.describe(f"{handling} ({detector})" if handling else None)


def _block(mapping: dict[str, str]) -> str:
    return "\n".join(f"  {key}: {_flow(value)}" for key, value in mapping.items())


def _flow(value: object) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _others(modality: str, chosen: str) -> str:
    from cascade.detectors import MODALITY

    return ", ".join(sorted(kind for kind, takes in MODALITY.items() if takes == modality and kind != chosen))


def _slug(stem: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-") or "cascade"
