"""The catalogue of bad input files and data settings (issue 14 C): each runs in-process as
pipelines/train.py runs it (preflight, then check_pipeline + train inside run_cli) and must end in
exactly one stderr line `error: ...` naming the problem and the fix, exit code 2, and no new run in
the store. The sweep refuses a file the same way, before its study or any trial exists. Then: the
fixes the messages name work, a target of several classes is grouped with a note, and the
DataModule lets no non-finite feature through whatever the data source.
"""

from __future__ import annotations

import re

import numpy as np
import optuna
import pandas as pd
import pytest
from helpers import SHARED_DATA, STUDENT_MAT_CSV, UCI_DROPOUT_CSV, run_statuses, shared_file, write_csv
from omegaconf import OmegaConf

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.run import run_cli
from dropout_risk.config.schema import DataConfig
from dropout_risk.config.validate import check_pipeline
from dropout_risk.data.base import DataError, TabularData
from dropout_risk.data.checks import MAX_ONEHOT_LEVELS
from dropout_risk.data.loaders import load_data
from dropout_risk.data.module import StudentDataModule
from dropout_risk.data.split import split_indices, standardise
from dropout_risk.data.tabular import load_csv, load_uci_dropout
from dropout_risk.training.train import train

N = 200  # rows of the small files: enough for the split (10 of each class); label = i % 2


def _rows(cell) -> str:
    """N rows `a,b,label` with b = cell(i) (str); a and b vary, neither looks like an ID."""
    return "".join(f"{(i * 37) % 11},{cell(i)},{i % 2}\n" for i in range(N))


def _b(i: int) -> str:
    return str((i * 13) % 97)


GOOD = "a,b,label\n" + _rows(_b)
LABEL = ["data.target=label", "data.positive=1"]
ROW_IN_TRAIN, ROW_IN_VAL, ROWS_IN_TRAIN = 16, 20, (3, 4)  # 0-based rows and their split (seed 0)


def _huge(rows) -> str:
    return "a,income,label\n" + _rows(lambda i: "1e308" if i in rows else _b(i))


# id, file text (bytes, or None: no file), extra overrides, words the error line must contain
CATALOGUE = [
    # item 8: a value whose square overflows float64
    ("huge-value-in-train", _huge({ROW_IN_TRAIN}), LABEL,
     ["column 'income' data row 17: value 1e+308 is too large to standardise", "mean/std overflow",
      "fix or drop the row", "data.drop_columns=['income']"]),
    ("huge-value-in-val", _huge({ROW_IN_VAL}), LABEL,
     ["column 'income' data row 21: value 1e+308 is too large to standardise", "data.drop_columns=['income']"]),
    ("huge-values-sum-overflows", _huge(set(ROWS_IN_TRAIN)), [*LABEL, "baselines=none"],
     ["column 'income' data row 4", "too large to standardise", "(and 1 more row(s))"]),
    ("huge-negative-value", _huge(set()).replace("\n5,", "\n-2e200,", 1), LABEL,
     ["column 'a'", "value -2e+200 is too large"]),
    # item 9: duplicate names, IDs, classes
    ("duplicate-header", "grade,grade,label\n" + _rows(_b), LABEL,
     ["duplicate column name(s) 'grade' in the header", "rename"]),
    ("duplicate-header-after-stripping", "grade, grade ,label\n" + _rows(_b), LABEL,
     ["duplicate column name(s) 'grade'"]),
    ("duplicate-header-with-bom-and-semicolons", "\ufeffgrade;x;grade;label\n" + "".join(
        f"{i % 7};{_b(i)};{i % 3};{i % 2}\n" for i in range(N)), LABEL, ["duplicate column name(s) 'grade'"]),
    ("integer-id-1..n", "id,b,label\n" + "".join(f"{i + 1},{_b(i)},{i % 2}\n" for i in range(N)), LABEL,
     ["column 'id' looks like an ID", "1, 2, ..., 200", "data.drop_columns=['id']", "data.allow_id_like=['id']"]),
    ("integer-id-from-1001", "b,student,label\n" + "".join(f"{_b(i)},{1001 + 3 * i},{i % 2}\n" for i in range(N)),
     LABEL, ["column 'student' looks like an ID", "1001, 1004, ..., 1598", "data.allow_id_like=['student']"]),
    ("several-classes-without-positive", "a,b,G3\n" + "".join(f"{i % 7},{_b(i)},{i % 5}\n" for i in range(N)),
     ["data.target=G3"], ["data=csv needs the positive label", "data.positive=VALUE"]),
    ("several-classes-and-an-id", "id,G3\n" + "".join(f"{i},{i % 5}\n" for i in range(N)),
     ["data.target=G3", "data.positive=0"], ["column 'id' looks like an ID"]),
    # the rest of the list
    ("missing-file", None, LABEL, ["no such file", "data.path="]),
    ("empty-file", "", LABEL, ["is empty (0 rows)"]),
    ("blank-lines-only", "\n\n \n", LABEL, ["is empty"]),
    ("header-only", "a,b,label\n", LABEL, ["has a header but no data rows"]),
    ("single-column", "label\n" + "".join(f"{i % 2}\n" for i in range(N)), LABEL, ["single column 'label'"]),
    ("target-all-one-value", "a,b,label\n" + "".join(f"{i % 7},{_b(i)},1\n" for i in range(N)), LABEL,
     ["every row has label='1'", "all one class"]),
    ("positive-never-occurs", "a,b,label\n" + "".join(f"{i % 7},{_b(i)},0\n" for i in range(N)), LABEL,
     ["data.positive='1' never occurs", "values found: '0' (200)"]),
    ("too-few-of-a-class", "a,b,label\n" + "".join(f"{i % 7},{_b(i)},{int(i < 4)}\n" for i in range(N)), LABEL,
     ["only 4 rows of one class", "at least 10 of each"]),
    ("target-not-in-file", GOOD, ["data.target=status", "data.positive=1"],
     ["data.target='status' not found", "available columns: 'a', 'b', 'label'"]),
    ("target-misspelt", GOOD, ["data.target=Label", "data.positive=1"], ["did you mean data.target='label'?"]),
    ("empty-target-cell", GOOD.replace(",0\n", ",\n", 1), LABEL, ["target column 'label' has 1 empty cell(s)"]),
    ("empty-feature-cell", "a,b,label\n" + _rows(lambda i: "" if i == 5 else _b(i)), LABEL,
     ["'b' (1 empty)", "no imputation", "data.drop_columns=['b']"]),
    ("nan-feature-cell", "a,b,label\n" + _rows(lambda i: "NaN" if i == 5 else _b(i)), LABEL, ["'b' (1 empty)"]),
    ("inf-feature-cell", "a,b,label\n" + _rows(lambda i: "inf" if i == 5 else _b(i)), LABEL, ["'b' (1 inf)"]),
    ("non-numeric-cell", "a,b,label\n" + _rows(lambda i: "12a" if i == 5 else _b(i)), LABEL,
     ["column 'b' is numeric except for 1 cell(s) such as '12a' (data row 6)", "data.drop_columns"]),
    ("drop-columns-not-in-file", GOOD, [*LABEL, "data.drop_columns=[c]"],
     ["data.drop_columns names column(s) not in the file: 'c'"]),
    ("drop-columns-misspelt", GOOD, [*LABEL, "data.drop_columns=[B]"], ["did you mean 'B' -> 'b'?"]),
    ("categorical-not-in-file", GOOD, [*LABEL, "data.categorical=[sex]"], ["data.categorical names", "'sex'"]),
    ("allow-id-like-not-in-file", GOOD, [*LABEL, "data.allow_id_like=[id]"],
     ["data.allow_id_like names column(s) not in the file: 'id'"]),
    ("drop-the-target", GOOD, [*LABEL, "data.drop_columns=[label]"], ["data.drop_columns contains the target"]),
    ("no-feature-left", GOOD, [*LABEL, "data.drop_columns=[a,b]"], ["no feature columns left"]),
    ("constant-feature", "a,b,label\n" + _rows(lambda i: "5"), LABEL,
     ["feature(s) b are constant", "data.drop_columns=['b']"]),
    ("not-utf8", ("name,b,label\n" + "".join(f"Jos\xe9{i % 3},{_b(i)},{i % 2}\n" for i in range(N))).encode("latin-1"),
     LABEL, ["is not UTF-8 text", "re-save the file as UTF-8"]),
    ("utf16", GOOD.encode("utf-16"), LABEL, ["is not UTF-8 text"]),
    ("row-with-an-extra-field", "a,b,label\n" + _rows(lambda i: f"{_b(i)},9" if i == 50 else _b(i)), LABEL,
     ["could not be parsed", "Expected 3 fields in line 52, saw 4", "every row has as many fields"]),
    ("first-row-with-an-extra-field", GOOD.replace(",0\n", ",0,9\n", 1), LABEL,  # pandas: an index column
     ["data row 1 (file line 2) has 4 field(s) but the header has 3"]),
    ("row-with-a-missing-field", "a,b,label\n" + _rows(_b).replace("\n5,", "\n", 1), LABEL,
     ["has 2 field(s) but the header has 3", "file line"]),
    ("header-one-field-short", "b,label\n" + _rows(_b), LABEL,
     ["data row 1 (file line 2) has 3 field(s) but the header has 2"]),
    ("trailing-separator", "a,b,label,\n" + _rows(_b).replace("\n", ",\n"), LABEL, ["trailing separator?"]),
    ("huge-number-of-levels", "city,b,label\n" + "".join(
        f"c{(i * 7919) % 1300},{(i * 13) % 7},{i % 2}\n" for i in range(3000)), LABEL,
     ["column 'city' has 1300 distinct values", f"at most {MAX_ONEHOT_LEVELS}", "data.drop_columns=['city']"]),
    ("text-id", "sid,b,label\n" + "".join(f"S{i:04d},{_b(i)},{i % 2}\n" for i in range(N)), LABEL,
     ["'sid' has 200 distinct values", "looks like an ID, not a category"]),
    ("wrong-separator-given", GOOD.replace(",", ";"), [*LABEL, "data.sep=','"],
     ["found 1 column", "looks ';'-separated", "data.sep=';'"]),
    ("decimal-commas-read-with-comma", "a;b;label\n" + "".join(f"{i % 7},5;{_b(i)};{i % 2}\n" for i in range(N)),
     [*LABEL, "data.sep=','"], ["data.sep=';'"]),
    ("separator-not-one-character", GOOD, [*LABEL, "data.sep=',;'"], ["must be a single character"]),
]


def _run_ids(client) -> set[str]:
    return set(run_statuses(client.tracking_uri))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _path(tmp_path, text) -> str:
    return str(tmp_path / "absent.csv") if text is None else str(write_csv(tmp_path, text))


def test_the_catalogue_is_long_and_its_rows_sit_in_the_splits_named():
    assert len(CATALOGUE) >= 20 and len({c[0] for c in CATALOGUE}) == len(CATALOGUE)
    s = split_indices(np.arange(N) % 2, 0.15, 0.15, seed=0)
    assert ROW_IN_TRAIN in s["train"] and ROW_IN_VAL in s["val"] and set(ROWS_IN_TRAIN) <= set(s["train"])


@pytest.mark.parametrize(("text", "overrides", "needles"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_data_is_one_line_exit_2_and_no_run(capsys, store, client, tmp_path, text, overrides, needles):
    args = ["data=csv", f"data.path={_path(tmp_path, text)}", *overrides,
            f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]
    before = _run_ids(client)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # as pipelines/train.py: preflight, then the job
        cfg = preflight(argv=args)  # the config the job gets: as Hydra composes it from the same command line

        def job() -> None:
            check_pipeline(cfg, "train")
            train(cfg)

        run_cli(job)
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, line
    assert _run_ids(client) == before  # no run at all: none RUNNING, none FAILED


@pytest.mark.parametrize(("rows", "named"), [({ROW_IN_TRAIN}, 17), (set(ROWS_IN_TRAIN), 4)],
                         ids=["column-zeroed", "nan-features"])
def test_sweep_refuses_a_huge_value_before_any_trial(capsys, client, make_cfg, tmp_path, rows, named):
    """Item 8 in a sweep. Before the fix: one huge value made its column's std inf, every trial
    trained on the column zeroed and 'converged'; two made the features NaN and every trial
    'diverged'; both exited 0. The DataModule's own guard alone refuses them after the sweep's
    parent run exists (a FAILED run): the loader must refuse them first."""
    from dropout_risk.sweep.run import run_sweep
    from dropout_risk.sweep.storage import make_storage

    path = write_csv(tmp_path, _huge(rows))
    journal = tmp_path / "journal.log"
    cfg = make_cfg("data=csv", f"data.path={path}", *LABEL, "optim=sgd", "sweep.lr_min=0.01", "sweep.lr_max=10",
                   "sweep.n_scan=2", "sweep.n_refine=0", "sweep.n_workers=1", "baselines=none",
                   f"sweep.storage=journal://{journal}", config="sweep")
    before = _run_ids(client)
    capsys.readouterr()

    def job() -> None:
        check_pipeline(cfg, "sweep")
        run_sweep(cfg, log=print)

    with pytest.raises(SystemExit) as info:
        run_cli(job)
    assert info.value.code == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"column 'income' data row {named}: value 1e+308 is too large to standardise" in line, line
    assert _run_ids(client) == before
    assert optuna.get_all_study_names(make_storage(f"journal://{journal}")) == []  # no study, no trial


# ------------------------------------------------------------------------ the fixes the lines name
def test_the_named_fixes_load_the_files(tmp_path):
    huge = write_csv(tmp_path, _huge({ROW_IN_TRAIN}), "huge.csv")
    assert list(load_csv(huge, "label", 1, drop_columns=["income"]).features.columns) == ["a"]
    body = "".join(f"{i + 1},{_b(i)},{i % 2}\n" for i in range(N))
    ids = write_csv(tmp_path, "id,b,label\n" + body, "ids.csv")
    assert list(load_csv(ids, "label", 1, drop_columns=["id"]).features.columns) == ["b"]
    kept = load_csv(ids, "label", 1, allow_id_like=["id"])
    assert kept.features["id"].tolist() == [float(i + 1) for i in range(N)]
    cfg = OmegaConf.structured(DataConfig(kind="csv", path=str(ids), target="label", positive="1",
                                          allow_id_like=["id"]))
    assert "id" in load_data(cfg, 0).features.columns  # the config key reaches the loader


@pytest.mark.parametrize("values", [
    pytest.param([i + 0.5 for i in range(N)], id="increasing-but-not-integers"),
    pytest.param([N - i for i in range(N)], id="decreasing"),
    pytest.param([i + 1 for i in range(N - 1)] + [N - 1], id="one-repeat"),
    pytest.param([i + 1 for i in range(19)], id="19-rows-too-few-to-tell"),
])
def test_what_is_not_an_id(tmp_path, values):
    text = "x,label\n" + "".join(f"{v},{i % 2}\n" for i, v in enumerate(values))
    assert load_csv(write_csv(tmp_path, text), "label", 1).features.shape == (len(values), 1)


def test_a_large_but_safe_value_is_kept(tmp_path):
    data = load_csv(write_csv(tmp_path, _huge(set()).replace("\n5,", "\n1e150,", 1)), "label", 1)
    dm = StudentDataModule(data, OmegaConf.structured(DataConfig(kind="csv", batch_size=64)), 0)
    assert all(np.isfinite(t[0].numpy()).all() for t in dm.tensors.values())


# ------------------------------------------------------------------------ several classes
def _dm(data: TabularData) -> StudentDataModule:
    return StudentDataModule(data, OmegaConf.structured(DataConfig(kind="csv", batch_size=64)), 0)


def test_several_classes_are_grouped_with_a_note_printed_once(capsys, tmp_path):
    path = write_csv(tmp_path, "a,b,G3\n" + "".join(f"{i % 7},{_b(i)},{i % 5}\n" for i in range(N)))
    data = load_csv(path, target="G3", positive="0")
    assert data.y.tolist() == [int(i % 5 == 0) for i in range(N)]
    assert capsys.readouterr().err == ""  # not before the data passed every check
    _dm(data), _dm(data)
    note = ("note: data.target='G3' has 5 classes; positive = '0' (40 students), negative = the other 4 classes "
            "(160 students: '1' 40, '2' 40, '3' 40, '4' 40)")
    assert capsys.readouterr().err == note + "\n"
    binary = load_csv(write_csv(tmp_path, GOOD, "binary.csv"), "label", 1)
    _dm(binary)
    assert binary.notes == [] and capsys.readouterr().err == ""


def test_real_files_load_with_no_column_taken_for_an_id():
    """Every column of the UCI files passes the ID check (none is strictly increasing), and their
    targets of several classes are grouped as documented."""
    uci = load_uci_dropout(shared_file(UCI_DROPOUT_CSV))
    assert uci.notes == ["note: target column 'Target' has 3 classes; positive = 'Dropout' (1421 students), "
                         "negative = the other 2 classes (3003 students: 'Graduate' 2209, 'Enrolled' 794)"]
    assert load_uci_dropout(UCI_DROPOUT_CSV, drop_enrolled=True).notes == []
    por = shared_file(SHARED_DATA / "uci_student_performance" / "student-por.csv")
    g3 = load_csv(por, target="G3", positive="0")
    assert g3.notes[0].startswith("note: data.target='G3' has 17 classes; positive = '0' (15 students), "
                                  "negative = the other 16 classes (634 students: ")
    for path, n in ((UCI_DROPOUT_CSV, 4424), (STUDENT_MAT_CSV, 395), (por, 649)):
        frame = pd.read_csv(shared_file(path), sep=";", encoding="utf-8-sig")
        assert len(frame) == n
        numeric = frame.select_dtypes("number")
        assert not [c for c in numeric if numeric[c].is_monotonic_increasing]


# ------------------------------------------------------------------------ the DataModule's guard
@pytest.mark.parametrize(("column", "row", "words"), [
    pytest.param([np.nan if i == 7 else float(i % 5) for i in range(N)], 8, "is not a finite number", id="nan"),
    pytest.param([1e200 if i == ROW_IN_TRAIN else -5e199 if i == 3 else float(i % 5) for i in range(N)],
                 ROW_IN_TRAIN + 1, "training split's mean/std overflow", id="overflow"),
])
def test_no_non_finite_feature_reaches_training_from_any_source(column, row, words):
    """Data built without the CSV loader's checks: the DataModule refuses it, naming column and row."""
    features = pd.DataFrame({"ok": [float(i % 3) for i in range(N)], "bad": column})
    data = TabularData(name="custom", features=features, y=np.arange(N) % 2)
    with pytest.raises(DataError) as info:
        _dm(data)
    message = str(info.value)
    assert f"column 'bad' data row {row}" in message and words in message and "\n" not in message
    assert "data.drop_columns=['bad']" in message
    with pytest.raises(DataError, match=re.escape(words)):
        standardise(data, OmegaConf.structured(DataConfig(kind="csv", batch_size=64)), 0)


def test_the_split_checks_need_no_torch():
    """data/split.py (split, standardisation, their checks) imports no torch or Lightning, so a
    pipeline can run it before its first MLflow run without paying for those imports."""
    import ast

    import dropout_risk.data.split as split

    tree = ast.parse(open(split.__file__).read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not {m for m in imported if m.split(".")[0] in ("torch", "lightning")}
