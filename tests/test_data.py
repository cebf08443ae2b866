"""Dataset loaders and splits, on the real sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cascade import data
from cascade.data.dataset import split_indices
from cascade.data.spamassassin import subject_and_body


def test_spamassassin_has_all_mails_with_the_published_spam_rate(spamassassin: data.Dataset) -> None:
    assert len(spamassassin) == 6046
    assert spamassassin.positive_rate == pytest.approx(0.314, abs=0.001)
    assert set(spamassassin.groups) == {"easy-ham-1", "easy-ham-2", "hard-ham-1", "spam-1", "spam-2"}
    assert np.sum(spamassassin.groups == "hard-ham-1") == 250


def test_spamassassin_text_is_subject_and_body_without_headers(spamassassin: data.Dataset) -> None:
    assert all(text.startswith("Subject:") for text in spamassassin.texts[:200])
    assert not any("Return-Path:" in text.split("\n\n", 1)[0] for text in spamassassin.texts)


def test_subject_and_body_decodes_html_and_drops_headers() -> None:
    raw = (
        "From: a@b.c\nReceived: from x\nSubject: Win now\nContent-Type: text/html\n\n"
        "<html><b>Cheap</b> &amp; fast</html>\n"
    )
    assert subject_and_body(raw) == "Subject: Win now\n\nCheap & fast"


def test_shuttle_matches_the_odds_shape(shuttle: data.Dataset) -> None:
    assert shuttle.features is not None and shuttle.features.shape == (49097, 9)
    assert shuttle.positive_rate == pytest.approx(0.0715, abs=0.0005)


def test_fashion_mnist_marks_shirts_as_anomalies() -> None:
    data.fetch("fashion-mnist", progress=False)
    fashion = data.load("fashion-mnist")
    assert fashion.images is not None and fashion.images.shape == (70000, 28, 28)
    assert np.all(fashion.y[fashion.groups == "shirt"] == 1)
    assert np.all(fashion.y[fashion.groups != "shirt"] == 0)


def test_splits_are_disjoint_cover_everything_and_keep_the_label_mix(spamassassin: data.Dataset) -> None:
    parts = split_indices(spamassassin.y, spamassassin.groups, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert len(joined) == len(spamassassin) and len(np.unique(joined)) == len(spamassassin)
    for index in parts.values():
        assert spamassassin.y[index].mean() == pytest.approx(spamassassin.positive_rate, abs=0.01)
    assert len(parts["train"]) == pytest.approx(0.6 * len(spamassassin), abs=5)


def test_splits_are_deterministic_in_the_seed(spamassassin: data.Dataset) -> None:
    first = data.load("spamassassin", split="test", seed=7)
    again = data.load("spamassassin", split="test", seed=7)
    other = data.load("spamassassin", split="test", seed=8)
    assert list(first.ids) == list(again.ids)
    assert list(first.ids) != list(other.ids)


def test_hard_ham_is_spread_over_every_split() -> None:
    splits = data.load_splits("spamassassin", seed=0)
    for split in splits.values():
        assert np.sum(split.groups == "hard-ham-1") >= 40


def test_max_samples_subsamples_with_stratification(spamassassin: data.Dataset) -> None:
    small = data.load("spamassassin", max_samples=600, seed=1)
    assert len(small) == pytest.approx(600, abs=5)
    assert small.positive_rate == pytest.approx(spamassassin.positive_rate, abs=0.02)


def test_unknown_dataset_and_split_name_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        data.load("nope")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        data.load("shuttle", split="dev")


def test_missing_dataset_says_how_to_fetch_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CASCADE_HOME", str(tmp_path))
    with pytest.raises(data.DatasetMissing, match="cascade data fetch spamassassin"):
        data.load("spamassassin")


def test_csv_with_text_column_and_positive_label(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text("id,body,verdict\n1,hello there,ok\n2,buy now,fraud\n3,see you,ok\n")
    dataset = data.load("csv", path=path, text_column="body", label_column="verdict", positive_label="fraud")
    assert dataset.texts == ["hello there", "buy now", "see you"]
    assert dataset.y.tolist() == [0, 1, 0]
    assert list(dataset.ids) == ["1", "2", "3"]


def test_jsonl_with_feature_columns(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    rows = [{"a": 1.0, "b": 2.0, "label": "x"}, {"a": 3.0, "b": 4.5, "label": "y"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    dataset = data.load("jsonl", path=path, feature_columns=["a", "b"])
    assert dataset.features is not None and dataset.features.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert dataset.label_names == ("x", "y") and dataset.y.tolist() == [0, 1]


def test_user_file_errors_name_the_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,label\n1.0,x\nhello,y\n")
    with pytest.raises(ValueError, match="column 'a' is not a number"):
        data.load("csv", path=path, feature_columns=["a"])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "hi", "label": 1}\n{not json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2: not valid JSON"):
        data.load("jsonl", path=broken, text_column="text")
