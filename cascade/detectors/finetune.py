"""A text detector that fine-tunes MiniLM (BERT) end to end with the Hugging Face ``Trainer``.

torch and transformers are imported inside the methods, so importing this module stays cheap.
The saved ``model/`` folder is a plain HF sequence-classification folder: ``transformers.pipeline``
loads it directly, with the class labels as its label names.

>>> texts = ["cheap meds now", "meeting at 3", "win money now", "lunch tomorrow?"] * 8
>>> detector = MiniLMClassifier(max_steps=4, max_length=16)            # doctest: +SKIP
>>> detector.fit(texts, [1, 0, 1, 0] * 8).predict_proba(["cheap money"]).shape  # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Self, Sequence

import numpy as np

from cascade.artifact import ArtifactError
from cascade.detectors.base import DetectorBase, check_labels, check_texts

if TYPE_CHECKING:
    from transformers import Pipeline

MODEL_DIR = "model"


class MiniLMClassifier(DetectorBase):
    """MiniLM with a fresh classification head, fine-tuned on CPU for ``max_steps`` optimiser steps.

    ``model`` names a model of :mod:`cascade.models` or a BERT-style folder. Texts are cut to
    ``max_length`` tokens for training and prediction alike. The label names of the fine-tuned
    model are the classes as strings (``"0"``, ``"1"``), so a pipeline's output maps back to
    ``classes_`` without a lookup table.

    >>> MiniLMClassifier(max_steps=30, max_length=64)
    MiniLMClassifier(max_length=64, max_steps=30)
    """

    kind = "minilm-finetune"
    modality = "text"
    _json_state = ("classes_",)

    def __init__(
        self,
        model: str = "minilm",
        max_steps: int = 80,
        learning_rate: float = 5e-5,
        batch_size: int = 16,
        max_length: int = 128,
        weight_decay: float = 0.01,
        predict_batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.max_steps = max_steps
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_length = max_length
        self.weight_decay = weight_decay
        self.predict_batch_size = predict_batch_size
        self.seed = seed

    def fit(self, X: Sequence[str], y: np.ndarray | None = None) -> Self:
        """Fine-tune on labelled texts; ``y`` holds integer classes (at least two)."""
        texts = check_texts(X, self.kind)
        labels = check_labels(y, len(texts), self.kind)
        from transformers import (
            AutoModelForSequenceClassification,
            AutoTokenizer,
            DataCollatorWithPadding,
            PrinterCallback,
            Trainer,
            TrainingArguments,
            set_seed,
        )

        from cascade.models import path

        classes, targets = np.unique(labels, return_inverse=True)
        names = [str(c) for c in classes.tolist()]
        source = path(self.model)
        tokenizer = AutoTokenizer.from_pretrained(str(source), model_max_length=self.max_length)
        set_seed(self.seed)  # the new classification head is drawn from the global RNG
        with _quiet():  # the load report would only say that the new head is missing from MiniLM
            network = AutoModelForSequenceClassification.from_pretrained(
                str(source), num_labels=len(classes), id2label=dict(enumerate(names)),
                label2id={name: i for i, name in enumerate(names)}, problem_type="single_label_classification",
                use_safetensors=True,
            )
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length)
        samples = [
            {"input_ids": ids, "attention_mask": mask, "labels": int(target)}
            for ids, mask, target in zip(encoded["input_ids"], encoded["attention_mask"], targets)
        ]
        with tempfile.TemporaryDirectory(prefix="cascade-minilm-") as scratch:
            arguments = TrainingArguments(
                output_dir=scratch, max_steps=self.max_steps, learning_rate=self.learning_rate,
                per_device_train_batch_size=self.batch_size, weight_decay=self.weight_decay, seed=self.seed,
                use_cpu=True, save_strategy="no", logging_strategy="no", report_to=[],
                disable_tqdm=True,
            )
            trainer = Trainer(model=network, args=arguments, train_dataset=samples,
                              data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer)
            trainer.remove_callback(PrinterCallback)  # it prints the final loss summary to stdout
            trainer.train()
        self.model_ = network.eval()
        self.tokenizer_ = tokenizer
        self.classes_ = classes
        return self

    def predict_proba(self, X: Sequence[str]) -> np.ndarray:
        """Softmax of the logits, ``(n, k)`` float64, columns in the order of ``classes_``."""
        self._check_fitted()
        texts = check_texts(X, self.kind)
        if not texts:
            return np.zeros((0, self.n_classes), dtype=np.float64)
        import torch

        batches = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.predict_batch_size):
                inputs = self.tokenizer_(texts[start:start + self.predict_batch_size], truncation=True,
                                         max_length=self.max_length, padding=True, return_tensors="pt")
                logits = self.model_(**inputs).logits
                batches.append(torch.softmax(logits.double(), dim=-1).numpy())
        return np.concatenate(batches)

    def pipeline(self) -> Pipeline:
        """A CPU ``text-classification`` pipeline over the fitted model, truncating to ``max_length``.

        It scores every class by default; labels are the classes as strings.

        >>> detector.pipeline()(["win money now"])  # doctest: +SKIP
        [[{'label': '1', 'score': 0.97}, {'label': '0', 'score': 0.03}]]
        """
        self._check_fitted()
        from transformers import pipeline

        return pipeline("text-classification", model=self.model_, tokenizer=self.tokenizer_, device="cpu",
                        truncation=True, top_k=None)

    def _save_extra(self, directory: Path) -> None:
        with _quiet():
            self.model_.save_pretrained(directory / MODEL_DIR, safe_serialization=True)
        self.tokenizer_.save_pretrained(directory / MODEL_DIR)

    def _load_extra(self, directory: Path) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = directory / MODEL_DIR
        try:
            self.tokenizer_ = AutoTokenizer.from_pretrained(str(folder))
            with _quiet():
                self.model_ = AutoModelForSequenceClassification.from_pretrained(str(folder), use_safetensors=True)
        except Exception as exc:  # transformers and safetensors raise several error types
            raise ArtifactError(f"{folder}: cannot load the fine-tuned model ({exc})") from exc
        self.model_.eval()


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' progress bars and warnings for one expected-noisy call."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
