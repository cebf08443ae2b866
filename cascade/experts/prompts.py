"""Prompt templates: a sample becomes a question whose one-word answer is a label word.

Templates are plain ``str.format`` strings. The question template sees ``{text}`` (the sample,
truncated to the token budget) and ``{labels}`` (the label words joined, e.g. ``"ham or spam"``).
Retrieved shots become earlier chat turns (the same question about the shot, answered by its
label word), unless the question template has an ``{examples}`` placeholder: then the shots are
written inline there, each with the ``example`` template. The chat-turn form is the default
because it scores far better with small chat models (SmolLM2-135M, 4 shots, SpamAssassin:
AUROC 0.98 as chat turns vs 0.61 inline). Feature rows are serialised to text first
(:func:`serialize_rows`).

>>> t = default_template("text", ["ham", "spam"])
>>> print(t.question.format(text="Cheap meds!", labels=join_labels(["ham", "spam"])))
Is the e-mail below ham or spam?
<BLANKLINE>
E-mail:
Cheap meds!
<BLANKLINE>
Answer with one word: ham or spam.
>>> serialize_rows([[1.0, 2.5]], ["speed", "load"])
['speed: 1, load: 2.5']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

Modality = Literal["text", "features"]


@dataclass(frozen=True)
class PromptTemplate:
    """The strings that frame one sample.

    ``question``: the user turn to classify (``{text}``, ``{labels}``, optionally ``{examples}``);
    ``example``: one inline shot (``{text}``, ``{label}``), all inline shots prefixed by
    ``examples_header``; ``explain``: the first user turn of a rationale (``{text}``, ``{request}``);
    ``explain_label`` / ``explain_open``: the default request with and without a verdict.
    """

    question: str
    example: str
    examples_header: str
    explain: str
    explain_label: str
    explain_open: str


EMAIL = PromptTemplate(
    question="Is the e-mail below {labels}?\n\nE-mail:\n{text}\n\nAnswer with one word: {labels}.",
    example="E-mail:\n{text}\nAnswer: {label}\n\n",
    examples_header="Labelled examples:\n\n",
    explain="E-mail:\n{text}\n\n{request}",
    explain_label="In at most two sentences, explain why this e-mail is {label}.",
    explain_open="In at most two sentences, say whether this e-mail is {labels}, and why.",
)
MESSAGE = PromptTemplate(
    question="Is the message below {labels}?\n\nMessage:\n{text}\n\nAnswer with one word: {labels}.",
    example="Message:\n{text}\nAnswer: {label}\n\n",
    examples_header="Labelled examples:\n\n",
    explain="Message:\n{text}\n\n{request}",
    explain_label="In at most two sentences, explain why this message is {label}.",
    explain_open="In at most two sentences, say whether this message is {labels}, and why.",
)
TABULAR = PromptTemplate(
    question=("Rows are records from a monitored system; most of them are normal.\n\n"
              "Is the row below {labels}?\n\nRow: {text}\n\nAnswer with one word: {labels}."),
    example="Row: {text}\nAnswer: {label}\n\n",
    examples_header="Labelled rows:\n\n",
    explain="Rows are records from a monitored system; most of them are normal.\n\nRow: {text}\n\n{request}",
    explain_label="In at most two sentences, explain why this row is {label}.",
    explain_open="In at most two sentences, say whether this row is {labels}, and why.",
)


def default_template(modality: Modality, labels: Sequence[str], question: str | None = None) -> PromptTemplate:
    """The preset for a modality: e-mails for ham/spam texts, messages for other texts, rows for features.

    ``question`` (``ExpertConfig.template``) replaces the preset's question template.
    """
    if modality == "features":
        preset = TABULAR
    else:
        preset = EMAIL if [label.lower() for label in labels] == ["ham", "spam"] else MESSAGE
    if question is None:
        return preset
    if "{text}" not in question:
        raise ValueError("expert.template must contain the {text} placeholder")
    return replace(preset, question=question)


def join_labels(labels: Sequence[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b or c"``."""
    labels = list(labels)
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} or {labels[-1]}"


def fill(template: str, **fields: str) -> str:
    """``template.format`` that names the unknown placeholder in its error."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise ValueError(f"prompt template uses unknown placeholder {exc}; known: {sorted(fields)}") from None


def serialize_rows(features: np.ndarray | Sequence[Sequence[float]], feature_names: Sequence[str] | None = None,
                   precision: int = 4) -> list[str]:
    """Feature rows as ``"name: value, ..."`` text (``f1``, ``f2``, ... when names are not given)."""
    rows = np.asarray(features, dtype=float)
    if rows.ndim != 2:
        raise ValueError(f"feature rows must be a 2-D array, got shape {rows.shape}")
    names = list(feature_names) if feature_names else [f"f{j + 1}" for j in range(rows.shape[1])]
    if len(names) != rows.shape[1]:
        raise ValueError(f"{len(names)} feature names for {rows.shape[1]} columns")
    return [", ".join(f"{name}: {value:.{precision}g}" for name, value in zip(names, row)) for row in rows]
