"""User files: columns inferred (or given), string labels, CSV / JSONL / Parquet read alike."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, load_wine

from cascade import data
from cascade.data.files import inspect_file


@pytest.fixture
def wine_frame() -> pd.DataFrame:
    """scikit-learn's bundled wine table with string cultivar labels and a categorical column."""
    frame = load_wine(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})
    frame["cellar"] = np.where(frame["alcohol"] > 13.0, "north", "south")
    return frame


def test_numeric_and_categorical_columns_are_inferred_and_announced(
        tmp_path: Path, wine_frame: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "wine.csv"
    wine_frame.to_csv(path, index=False)
    with caplog.at_level(logging.INFO, logger="cascade.data"):
        dataset = data.load("csv", path=path, label_column="target")
    numeric = [c for c in wine_frame.columns if c not in ("target", "cellar")]
    assert dataset.feature_names == (*numeric, "cellar=north", "cellar=south")
    np.testing.assert_allclose(dataset.features[:, :13], wine_frame[numeric].to_numpy())
    np.testing.assert_array_equal(dataset.features[:, 13], (wine_frame["cellar"] == "north").to_numpy())
    assert dataset.label_names == ("barbera", "barolo", "grignolino")
    assert [dataset.label_names[i] for i in dataset.y] == wine_frame["target"].tolist()
    lines = [r.getMessage() for r in caplog.records if r.name == "cascade.data"]
    assert len(lines) == 1 and "3 classes" in lines[0] and "1 categorical one-hot (cellar)" in lines[0]


def test_csv_jsonl_and_parquet_give_the_same_dataset(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    wine_frame.to_csv(tmp_path / "wine.csv", index=False)
    wine_frame.to_json(tmp_path / "wine.jsonl", orient="records", lines=True)
    wine_frame.to_parquet(tmp_path / "wine.parquet")
    loaded = [data.load(fmt, path=tmp_path / f"wine.{fmt}", label_column="target") for fmt in ("csv", "jsonl", "parquet")]
    for other in loaded[1:]:
        np.testing.assert_allclose(other.features, loaded[0].features)
        assert other.feature_names == loaded[0].feature_names and other.y.tolist() == loaded[0].y.tolist()


def test_the_one_text_column_is_inferred(tmp_path: Path) -> None:
    path = tmp_path / "tickets.csv"
    path.write_text("id,priority,body,verdict\n"
                    "1,2,please reset my password for the portal,ok\n"
                    "2,1,wire the money to this account today,fraud\n"
                    "3,3,the invoice for march is attached here,ok\n")
    dataset = data.load("csv", path=path, label_column="verdict")
    assert dataset.texts == ["please reset my password for the portal", "wire the money to this account today",
                             "the invoice for march is attached here"]
    assert inspect_file(path, label_column="verdict").left_out == ("priority",)


def test_explicit_columns_win(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    path = tmp_path / "wine.csv"
    wine_frame.to_csv(path, index=False)
    dataset = data.load("csv", path=path, label_column="target", feature_columns=["proline", "cellar"])
    assert dataset.feature_names == ("proline", "cellar=north", "cellar=south")
    as_text = data.load("csv", path=path, label_column="target", text_column="cellar")
    assert as_text.texts == wine_frame["cellar"].tolist()


def test_positive_label_picks_the_anomaly_class(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    path = tmp_path / "wine.csv"
    wine_frame.to_csv(path, index=False)
    dataset = data.load("csv", path=path, label_column="target", positive_label="barbera")
    assert dataset.label_names == ("not-barbera", "barbera")
    assert dataset.y.tolist() == (wine_frame["target"] == "barbera").astype(int).tolist()


def test_two_string_classes_make_the_rarer_one_positive(tmp_path: Path) -> None:
    cancer = load_breast_cancer(as_frame=True).frame
    cancer["diagnosis"] = np.where(cancer.pop("target") == 0, "malignant", "benign")
    path = tmp_path / "cancer.csv"
    cancer.to_csv(path, index=False)
    dataset = data.load("csv", path=path, label_column="diagnosis")
    assert dataset.label_names == ("benign", "malignant")  # 212 malignant of 569
    assert dataset.positive_rate == pytest.approx(212 / 569)
    assert dataset.features.shape == (569, 30)


def test_truthy_words_are_positive_even_when_common(tmp_path: Path) -> None:
    path = tmp_path / "flags.csv"
    path.write_text("x,flagged\n" + "".join(f"{i},{'yes' if i % 4 else 'no'}\n" for i in range(12)))
    assert data.load("csv", path=path, label_column="flagged").label_names == ("no", "yes")


@pytest.mark.parametrize(("content", "options", "message"), [
    ("a,b\n1,2\n", {"label_column": "label"}, r"dataset.label_column: no column 'label'"),
    ("a,label\n1,x\n2,y\n", {"feature_columns": ["a", "c"]}, r"dataset.feature_columns: no column \['c'\]"),
    ("a,label\n1,x\n2,y\n", {"positive_label": "z"}, r"dataset.positive_label: 'z' is not a value"),
    ("a,label\n1,x\n2,x\n", {}, r"dataset.label_column: column 'label' holds one value"),
    ("a,label\n1,x\ninf,y\n", {}, r"missing.csv:3: column 'a' is not finite \('inf'; 1 such rows\)"),
    ("a,label\n1,x\n2,\n3,y\n4,\n", {}, r"missing.csv: no value in label column 'label' on lines 3, 5 \(2 rows\)"),
    ("subject,body,label\n" + "".join(f"s{i},b{i},{i % 2}\n" for i in range(8)), {},
     r"dataset.text_column: .* several text columns \['subject', 'body'\]"),
    ("a,label\n1,x\n2\n", {}, r"missing.csv:3: 1 fields, the header has 2"),
])
def test_file_errors_name_the_field_or_line(tmp_path: Path, content: str, options: dict, message: str) -> None:
    path = tmp_path / "missing.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.load("csv", path=path, **options)


def test_missing_feature_values_are_kept_counted_and_said(tmp_path: Path, wine_frame: pd.DataFrame) -> None:
    """5% of one numeric column empty, a few empty categories, and a column with no value at all."""
    rng = np.random.default_rng(0)
    wine_frame.loc[rng.choice(len(wine_frame), 9, replace=False), "magnesium"] = np.nan
    wine_frame.loc[[3, 50, 100], "cellar"] = None
    wine_frame["notes"] = None
    path = tmp_path / "wine.csv"
    wine_frame.to_csv(path, index=False)
    schema = inspect_file(path, label_column="target")
    assert schema.missing == (("magnesium", 9), ("cellar", 3)) and schema.left_out == ("notes",)
    assert schema.describe("imputed").endswith("; missing: 12 cells in 2 columns ('magnesium' 9, 'cellar' 3), "
                                               "numbers imputed, an empty category is one-hot like any other "
                                               "('name=')")
    dataset = data.load("csv", path=path, label_column="target")
    magnesium = dataset.feature_names.index("magnesium")
    np.testing.assert_array_equal(np.isnan(dataset.features[:, magnesium]), wine_frame["magnesium"].isna())
    assert np.isnan(dataset.features).sum() == 9
    assert dataset.features[[3, 50, 100], dataset.feature_names.index("cellar=")].tolist() == [1.0, 1.0, 1.0]


def test_a_missing_label_is_an_error_naming_its_lines(tmp_path: Path) -> None:
    cancer = load_breast_cancer(as_frame=True).frame
    cancer["diagnosis"] = np.where(cancer.pop("target") == 0, "malignant", "benign")
    cancer.loc[[7, 300], "diagnosis"] = None
    path = tmp_path / "cancer.csv"
    cancer.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"cancer.csv: no value in label column 'diagnosis' on lines 9, 302 "
                                         r"\(2 rows\); fill or drop those rows"):
        data.load("csv", path=path, label_column="diagnosis")


def test_describe_knows_modality_and_classes_without_loading(tmp_path: Path) -> None:
    assert data.describe("spamassassin") == ("text", ("ham", "spam"))
    path = tmp_path / "rows.csv"
    path.write_text("a,b,label\n1,2,low\n3,4,high\n5,6,mid\n")
    assert data.describe("csv", path=str(path)) == ("features", ("high", "low", "mid"))
    with pytest.raises(FileNotFoundError, match="dataset.path: no such data file"):
        data.describe("csv", path=str(tmp_path / "absent.csv"))


def test_dataset_modules_never_import_the_registry() -> None:
    """Registration runs one way: the registry imports each dataset module, never the reverse."""
    import ast

    package = Path(data.__file__).parent
    for module in package.glob("*.py"):
        if module.name in ("__init__.py", "registry.py", "roles.py"):   # roles.py cuts what the registry loads
            continue
        imported = {node.module for node in ast.walk(ast.parse(module.read_text()))
                    if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(ast.parse(module.read_text())) if isinstance(node, ast.Import)
                     for alias in node.names}
        assert not {"cascade.data.registry", "cascade.data"} & imported, module.name
    assert {name for name in data.SOURCES} == {"spamassassin", "shuttle", "fashion-mnist"}
