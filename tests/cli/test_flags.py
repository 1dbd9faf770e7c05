"""One-line errors under every Hydra flag (issue 18 item 2): the checks of a plain run hold under
-m, --cfg, --info, --resolve and --package, for +key= and ++key= too; an added key the schema
does not know is refused with the close keys; `tags.x=v` names the `+tags.x=v` fix. In-process:
preflight() is what pipelines/train.py runs before Hydra (one subprocess test in tests/cli covers
the process path)."""

from __future__ import annotations

import pytest

from dropout_risk.cli.preflight import covering_jobs, preflight

FLAGS = [["-m"], ["--cfg", "job"], ["--info", "config"], ["--cfg", "job", "--resolve"], ["--cfg", "job", "-p", "optim"]]

# (overrides, what the one line says): each a mistake a user makes
MISTAKES = [
    (["optim.lrr=0.1"], "unknown config key 'optim.lrr': did you mean optim.lr?"),
    (["+optim.lrr=0.1"], "optim.lrr is not an argument of torch.optim.AdamW"),
    (["+foo=1"], "unknown config key 'foo'"),
    (["++foo=1"], "unknown config key 'foo'"),
    (["+data.n_studnets=10"], "unknown config key 'data.n_studnets': did you mean data.n_students?"),
    (["tags.x=v"], "'tags.x' is not set, so it cannot be overridden: add it with +tags.x=v"),
    (["optim=adam"], "optim=adam is not an option: choose one of adamw, sgd"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs"),
]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("overrides, needle", MISTAKES, ids=[m[0][0] for m in MISTAKES])
def test_every_mistake_is_one_line_exit_2_under_m_and_cfg(capsys, store, overrides, needle):
    for flags in FLAGS[:2]:
        with pytest.raises(SystemExit) as info:
            preflight(argv=[*flags, *overrides, f"tracking.uri={store['uri']}"])
        out, err = capsys.readouterr()
        assert info.value.code == 2 and out == "", flags
        assert needle in _one_line(err), flags
        assert "_schema" not in err and "HYDRA_FULL_ERROR" not in err


@pytest.mark.parametrize("flags", FLAGS[2:], ids=lambda f: " ".join(f))
def test_the_other_printing_flags_check_the_same(capsys, store, flags):
    for overrides, needle in (MISTAKES[0], MISTAKES[2], MISTAKES[5]):
        with pytest.raises(SystemExit) as info:
            preflight(argv=[*flags, *overrides, f"tracking.uri={store['uri']}"])
        assert info.value.code == 2 and needle in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("sweep, needle", [
    (["optim.lr=1e-3,abc"], "optim.lr: Value 'abc' of type 'str' could not be converted to Float"),
    (["optim=adamw,sgdd"], "optim=sgdd is not an option"),
    (["optim.lr=1e-3,1e-2", "model.hidden=[8],[8,x]"], "model.hidden"),
    (["optim.lr=1e-3,1e-2", "optim.lrr=1,2"], "did you mean optim.lr?"),
])
def test_a_multirun_composes_every_swept_value_before_any_job(capsys, store, sweep, needle):
    """A value that cannot compose in any one job stops the multirun before it starts."""
    with pytest.raises(SystemExit) as info:
        preflight(argv=["-m", *sweep, f"tracking.uri={store['uri']}"])
    assert info.value.code == 2 and needle in _one_line(capsys.readouterr().err)


def test_a_bad_value_is_left_to_its_job_under_m_and_refused_under_cfg(capsys, store):
    """-m optim.lr=-1,0.01: the job with -1 fails alone (tests/cli/test_multirun.py); --cfg refuses it."""
    preflight(argv=["-m", "optim.lr=-1,0.01", f"tracking.uri={store['uri']}"])  # returns: Hydra's turn
    assert capsys.readouterr() == ("", "")
    with pytest.raises(SystemExit) as info:
        preflight(argv=["--cfg", "job", "optim.lr=-1", f"tracking.uri={store['uri']}"])
    assert info.value.code == 2 and "optim.lr=-1.0 must be > 0" in _one_line(capsys.readouterr().err)


def test_good_command_lines_pass_under_every_flag(capsys, store):
    for flags in FLAGS:
        preflight(argv=[*flags, "optim=sgd", "+tags.team=risk", "++optim.lr=0.3", f"tracking.uri={store['uri']}"])
    preflight(argv=["--help"])  # Hydra's (the pipeline's help template): no config checked
    assert capsys.readouterr() == ("", "")


def test_covering_jobs_use_every_value_once_not_every_combination():
    jobs = covering_jobs(["optim.lr=1,2,3", "model.hidden=[8],[16]", "seed=0"])
    assert jobs == [["optim.lr=1", "model.hidden=[8]", "seed=0"], ["optim.lr=1", "model.hidden=[16]", "seed=0"],
                    ["optim.lr=2", "model.hidden=[8]", "seed=0"], ["optim.lr=3", "model.hidden=[8]", "seed=0"]]
    assert covering_jobs(["optim.lr=range(1,4)"]) == [["optim.lr=1"], ["optim.lr=2"], ["optim.lr=3"]]
