"""CSV loading: the real UCI files, separator sniffing, encoding, and one clear DataError per bad input."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import STUDENT_MAT_CSV, UCI_DROPOUT_CSV, shared_file, write_csv

from dropout_risk.data.base import DataError, TabularData
from dropout_risk.data.tabular import (
    UCI_CATEGORICAL,
    UCI_FIRST_SEM_COLUMNS,
    UCI_SECOND_SEM_COLUMNS,
    load_csv,
    load_uci_dropout,
)

UCI_SHA256 = "3ef126de5cefff26eb11fbb4237f1a1401cb64b488e2f1d598c23cedeb4c45ae"


def error_of(call: Callable[[], object]) -> str:
    """The DataError message of ``call()``; it must be a single line."""
    with pytest.raises(DataError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    return message


def assert_clean(data: TabularData) -> None:
    x = data.features
    assert all(dtype == np.float64 for dtype in x.dtypes)
    assert np.isfinite(x.to_numpy()).all()
    assert data.y.dtype == np.int64 and set(np.unique(data.y)) <= {0, 1}
    assert len(x) == len(data.y) and data.p_true is None
    assert x.columns.is_unique and all(isinstance(c, str) for c in x.columns)


def uci_targets(path: Path) -> list[str]:
    """The Target column read independently with the csv module."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [row["Target"] for row in csv.DictReader(fh, delimiter=";")]


@pytest.fixture(scope="module")
def uci_csv() -> Path:
    return shared_file(UCI_DROPOUT_CSV)


@pytest.fixture(scope="module")
def student_mat_csv() -> Path:
    return shared_file(STUDENT_MAT_CSV)


@pytest.fixture(scope="module")
def uci(uci_csv: Path) -> TabularData:
    return load_uci_dropout(uci_csv)


# ------------------------------------------------------------------------------------ the UCI file
def test_uci_default(uci: TabularData, uci_csv: Path) -> None:
    assert uci.name == "uci_dropout"
    assert len(uci.features) == 4424
    assert int(uci.y.sum()) == 1421
    assert_clean(uci)
    sha = hashlib.sha256(uci_csv.read_bytes()).hexdigest()
    assert sha == UCI_SHA256
    assert uci.fingerprint["sha256"] == sha and uci.fingerprint["rows"] == 4424
    assert uci.fingerprint["path"] == str(uci_csv)


def test_uci_column_quirks_are_handled(uci: TabularData) -> None:
    columns = list(uci.features.columns)
    assert "Daytime/evening attendance" in columns  # the TAB is stripped from the name
    assert not any(c != c.strip() or "\ufeff" in c or "\t" in c for c in columns)
    assert "Application order" in columns  # ordinal: stays numeric
    for binary in ("Debtor", "Gender", "Scholarship holder", "International"):
        assert set(uci.features[binary].unique()) == {0.0, 1.0}
    for nominal in UCI_CATEGORICAL:
        assert nominal not in columns
        levels = [c for c in columns if c.startswith(f"{nominal}=")]
        assert len(levels) >= 2
        block = uci.features[levels].to_numpy()
        assert np.array_equal(block.sum(axis=1), np.ones(len(block)))  # exactly one level per row
    assert len([c for c in columns if c.startswith("Course=")]) == 17
    assert len([c for c in columns if c.startswith("Application mode=")]) == 18
    assert "Course=33" in columns and "Course=9991" in columns  # integer codes without ".0"
    course = [c for c in columns if c.startswith("Course=")]
    assert [int(c.split("=")[1]) for c in course] == sorted(int(c.split("=")[1]) for c in course)


def test_uci_drop_enrolled(uci_csv: Path) -> None:
    targets = uci_targets(uci_csv)
    n_enrolled = targets.count("Enrolled")
    assert n_enrolled == 794
    data = load_uci_dropout(uci_csv, drop_enrolled=True)
    assert len(data.features) == len(targets) - n_enrolled
    assert int(data.y.sum()) == targets.count("Dropout") == 1421
    assert data.fingerprint["rows"] == len(targets) - n_enrolled
    assert data.fingerprint["drop_enrolled"] is True
    assert_clean(data)


def test_uci_early_warning_drops_second_semester(uci: TabularData, uci_csv: Path) -> None:
    data = load_uci_dropout(uci_csv, early_warning=True)
    columns = list(data.features.columns)
    assert not any(c.startswith("Curricular units 2nd sem") for c in columns)
    assert all(c in uci.features.columns for c in UCI_SECOND_SEM_COLUMNS)
    assert all(c in columns for c in UCI_FIRST_SEM_COLUMNS)
    assert data.features.shape[1] == uci.features.shape[1] - len(UCI_SECOND_SEM_COLUMNS)
    assert np.array_equal(data.y, uci.y)
    assert data.fingerprint["early_warning"] is True
    at_enrolment = load_uci_dropout(uci_csv, early_warning=True, drop_columns=UCI_FIRST_SEM_COLUMNS)
    assert not any(c.startswith("Curricular units") for c in at_enrolment.features.columns)


def test_uci_via_generic_loader_sniffs_the_separator(uci: TabularData, uci_csv: Path) -> None:
    data = load_csv(uci_csv, target="Target", positive="Dropout")
    assert_clean(data)
    assert np.array_equal(data.y, uci.y)
    assert data.features.shape == (4424, 36)  # integer codes stay numeric unless listed as categorical
    assert data.fingerprint == {"sha256": UCI_SHA256, "path": str(uci_csv), "rows": 4424}


def test_uci_loader_rejects_another_csv(student_mat_csv: Path) -> None:
    message = error_of(lambda: load_uci_dropout(student_mat_csv))
    assert "'Target'" in message and "not the UCI dropout file" in message and "data.path" in message


def test_uci_loader_rejects_a_comma_reexport(tmp_path: Path, uci_csv: Path) -> None:
    lines = uci_csv.read_text(encoding="utf-8-sig").splitlines()[:20]
    path = write_csv(tmp_path, "\n".join(line.replace(";", ",") for line in lines) + "\n")
    message = error_of(lambda: load_uci_dropout(path))
    assert "found 1 column" in message and "data.sep=','" in message


def test_student_performance_file_loads(student_mat_csv: Path) -> None:
    with open(student_mat_csv, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    data = load_csv(student_mat_csv, target="higher", positive="no")
    assert_clean(data)
    assert len(data.features) == len(rows) == 395
    assert int(data.y.sum()) == sum(r["higher"] == "no" for r in rows)
    columns = list(data.features.columns)
    assert {"G1", "G2", "G3", "age", "absences"} <= set(columns)  # quoted numbers stay numeric
    assert data.features["G1"].max() <= 20
    assert {"school=GP", "school=MS", "Mjob=teacher"} <= set(columns)
    assert not any(c.startswith("higher") for c in columns)


# ----------------------------------------------------------------------------- small well-formed CSVs
def test_sniffs_separators_bom_crlf_and_strips_names(tmp_path: Path) -> None:
    rows = [
        ["id code", " score\t", "grp", "y"],
        ["1", "0.5", "a", "yes"],
        ["2", "1.5", "b", "no"],
        ["3", "2", "a", "no"],
    ]
    for sep in [",", ";", "\t", "|"]:
        text = (
            "\ufeff" + "\r\n".join(sep.join(f'"{c}"' if "\t" in c else c for c in r) for r in rows) + "\r\n"
        )
        data = load_csv(write_csv(tmp_path, text, f"s{ord(sep)}.csv"), target="y", positive="yes")
        assert list(data.features.columns) == ["id code", "score", "grp=a", "grp=b"], sep
        assert data.y.tolist() == [1, 0, 0]
        assert data.features["score"].tolist() == [0.5, 1.5, 2.0]
        assert_clean(data)


def test_explicit_separator_and_tab_spelling(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a\tb\ty\n1\t2\t0\n3\t4\t1\n")
    for sep in ["\t", "\\t", "tab"]:
        assert load_csv(path, target="y", positive=1, sep=sep).features.shape == (2, 2)


@pytest.mark.parametrize("positive", ["1", 1, 1.0, " 1 "])
def test_positive_matches_as_normalised_text(tmp_path: Path, positive: object) -> None:
    path = write_csv(tmp_path, "x,y\n1,1\n2,0\n3,1\n4,0\n")
    assert load_csv(path, target="y", positive=positive).y.tolist() == [1, 0, 1, 0]


def test_positive_label_among_several_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "x,Target\n1,Dropout\n2,Graduate\n3,Enrolled\n4,Dropout\n")
    assert load_csv(path, target="Target", positive="Dropout").y.tolist() == [1, 0, 0, 1]


def test_declared_categorical_integer_codes_are_one_hot_in_numeric_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "code,x,y\n10,1,0\n2,2,1\n1,3,0\n2,4,1\n")
    data = load_csv(path, target="y", positive=1, categorical=["code"])
    assert list(data.features.columns) == ["code=1", "code=2", "code=10", "x"]
    assert data.features["code=2"].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert_clean(data)


def test_booleans_and_padded_numbers_are_numeric(tmp_path: Path) -> None:
    path = write_csv(tmp_path, 'flag,n,y\nTrue," 12",0\nFalse," 13 ",1\n')
    data = load_csv(path, target="y", positive=1)
    assert data.features["flag"].tolist() == [1.0, 0.0]
    assert data.features["n"].tolist() == [12.0, 13.0]


def test_drop_columns_is_the_fix_for_a_broken_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,y\n1,,0\n2,5,1\n3,6,0\n")
    assert "'b'" in error_of(lambda: load_csv(path, target="y", positive=1))
    data = load_csv(path, target="y", positive=1, drop_columns=["b"])
    assert list(data.features.columns) == ["a"]


# ------------------------------------------------------------------------------------ bad inputs
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert str(path) in message and "no such file" in message and "pass data.path=" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    message = error_of(lambda: load_csv(tmp_path, target="y", positive=1))
    assert "is a directory" in message and "data.path=" in message


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = error_of(lambda: load_csv(write_csv(tmp_path, text), target="y", positive=1))
    assert "empty" in message


def test_header_only(tmp_path: Path) -> None:
    message = error_of(lambda: load_csv(write_csv(tmp_path, "a,b,y\n"), target="y", positive=1))
    assert "no data rows" in message


@pytest.mark.parametrize(
    ("sep", "wrong", "fix"),
    [(";", ",", "data.sep=';'"), (",", ";", "data.sep=','"), ("\t", ",", "data.sep='\\t'")],
)
def test_wrong_separator(tmp_path: Path, sep: str, wrong: str, fix: str) -> None:
    path = write_csv(tmp_path, sep.join(["a", "b", "y"]) + "\n" + sep.join(["1", "2", "0"]) + "\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1, sep=wrong))
    assert "found 1 column" in message and fix in message


def test_wrong_separator_with_ragged_rows(tmp_path: Path) -> None:
    # decimal commas in a ';' file read with sep=',': rows get different field counts
    path = write_csv(tmp_path, "a;b;y\n1;2;0\n1,5;2;1\n1,5;2,5;0\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1, sep=","))
    assert "data.sep=';'" in message


def test_bad_separator_value(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,y\n1,0\n")
    assert "single character" in error_of(lambda: load_csv(path, target="y", positive=1, sep=",,"))


def test_single_column_file(tmp_path: Path) -> None:
    message = error_of(lambda: load_csv(write_csv(tmp_path, "y\n1\n0\n"), target="y", positive=1))
    assert "single column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "name,y\nJos\xe9,1\nAna,0\n".encode("latin-1"))
    assert "UTF-8" in error_of(lambda: load_csv(path, target="y", positive=1))


@pytest.mark.parametrize(
    ("text", "misspelt", "expected", "wrong_case", "suggestion"),
    [
        pytest.param(
            "age,grade,Target\n1,2,Dropout\n3,4,Graduate\n",
            {"target": "Targt", "positive": "Dropout"},
            ["'Targt' not found", "data.target='Target'", "'grade'"],
            {"target": "target", "positive": "Dropout"},
            "data.target='Target'",
            id="target_missing_suggests_close_matches",
        ),
        pytest.param(
            "x,Target\n1,Graduate\n2,Dropout\n3,Graduate\n",
            {"target": "Target", "positive": "Droput"},
            ["'Droput' never occurs", "'Graduate' (2)", "'Dropout' (1)"],
            {"target": "Target", "positive": "dropout"},
            "data.positive='Dropout'",
            id="positive_value_absent_lists_values",
        ),
    ],
)
def test_misspelt_name_lists_what_is_there_and_suggests_the_case(
    tmp_path: Path, text: str, misspelt: dict, expected: list[str], wrong_case: dict, suggestion: str
) -> None:
    """A misspelt data.target / data.positive: the message lists what the file has; the right
    name in the wrong case: the message suggests the exact spelling."""
    path = write_csv(tmp_path, text)
    message = error_of(lambda: load_csv(path, **misspelt))
    for fragment in expected:
        assert fragment in message
    message = error_of(lambda: load_csv(path, **wrong_case))
    assert suggestion in message


def test_target_missing_truncates_a_long_column_list(tmp_path: Path) -> None:
    header = ",".join(f"feature_{i}" for i in range(40)) + ",y"
    path = write_csv(tmp_path, header + "\n" + ",".join(["1"] * 41) + "\n")
    message = error_of(lambda: load_csv(path, target="label", positive=1))
    assert "more)" in message and "feature_39" not in message and len(message) < 600


def test_label_all_one_class(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "x,y\n1,yes\n2,yes\n")
    assert "all one class" in error_of(lambda: load_csv(path, target="y", positive="yes"))


def test_empty_target_cells(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "x,y\n1,1\n2,\n3,0\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "'y'" in message and "1 empty" in message and "data row(s) 2" in message


def test_nan_and_inf_in_numeric_features(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,c,y\n1,,0.5,0\n2,NA,inf,1\n3,4,-inf,0\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "'b' (2 empty)" in message and "'c' (2 inf)" in message
    assert "'a'" not in message and "data.drop_columns" in message


def test_empty_cells_in_text_features(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "grp,y\na,0\n,1\nb,0\n")
    assert "'grp' (1 empty)" in error_of(lambda: load_csv(path, target="y", positive=1))


def test_trailing_separator_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,y,\n1,0,\n2,1,\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "Unnamed" in message and "trailing separator" in message


def test_mostly_numeric_column_with_a_bad_cell(tmp_path: Path) -> None:
    values = ["12", "13", "14", "15", "16", "17", "18", "19", "20", "abc"]
    body = "".join(f"{v},{i % 2}\n" for i, v in enumerate(values))
    path = write_csv(tmp_path, "credits,y\n" + body)
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "'credits'" in message and "'abc'" in message and "data row 10" in message
    assert "data.drop_columns" in message


def test_mostly_text_column_is_categorical(tmp_path: Path) -> None:
    values = ["12", "abc", "def", "ghi", "12"]
    body = "".join(f"{v},{i % 2}\n" for i, v in enumerate(values))
    data = load_csv(write_csv(tmp_path, "code,y\n" + body), target="y", positive=1)
    assert list(data.features.columns) == ["code=12", "code=abc", "code=def", "code=ghi"]


def test_id_like_text_column(tmp_path: Path) -> None:
    body = "".join(f"S{i:04d},{i % 3},{i % 2}\n" for i in range(80))
    path = write_csv(tmp_path, "student_id,x,y\n" + body)
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "'student_id'" in message and "80 distinct values" in message
    assert "data.drop_columns=['student_id']" in message
    assert list(load_csv(path, target="y", positive=1, drop_columns=["student_id"]).features.columns) == ["x"]


def test_many_levels_but_repeated_is_still_a_category(tmp_path: Path) -> None:
    body = "".join(f"c{i % 60},{i % 2}\n" for i in range(200))  # 60 levels, 30 % unique
    data = load_csv(write_csv(tmp_path, "city,y\n" + body), target="y", positive=1)
    assert data.features.shape == (200, 60)


def test_unknown_drop_or_categorical_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "age,grade,y\n1,2,0\n3,4,1\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1, drop_columns=["grades"]))
    assert "data.drop_columns" in message and "'grades' -> 'grade'" in message
    message = error_of(lambda: load_csv(path, target="y", positive=1, categorical=["sex"]))
    assert "data.categorical" in message and "'sex'" in message


def test_target_cannot_be_dropped_or_a_feature(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "age,grade,y\n1,2,0\n3,4,1\n")
    assert "target" in error_of(lambda: load_csv(path, target="y", positive=1, drop_columns=["y"]))
    message = error_of(lambda: load_csv(path, target="y", positive=1, drop_columns=["age", "grade"]))
    assert "no feature columns" in message


def test_duplicate_names_after_stripping(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a, a,y\n1,2,0\n3,4,1\n")
    assert "duplicate column" in error_of(lambda: load_csv(path, target="y", positive=1))


def test_ragged_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "a,b,y\n1,2,0\n1,2,3,4\n")
    message = error_of(lambda: load_csv(path, target="y", positive=1))
    assert "could not be parsed" in message
