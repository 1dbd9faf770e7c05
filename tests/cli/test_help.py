"""`python pipelines/<name>.py --help`: each pipeline's own help (conf/hydra/help/<name>.yaml).

Each pipeline script runs in this process (runpy, as `python pipelines/<name>.py --help` would:
preflight, then Hydra's main, which prints the help and exits 0); no new process (~10 s of
imports each). The help must say what the pipeline does, list every option of every config group
(read from conf/<group>/: a new option file fails here until the help names it), show defaults
equal to the composed config's (most are ${...} interpolations, so they follow the config and the
overrides given with --help; nulls are written as text), give three example commands that compose,
point to --cfg job and the README, and show no *_schema entry and no Hydra boilerplate, in lines
of at most 100 columns.
compare.py composes from the ConfigStore, not from conf/ (register_compare_config stores its help
file there as hydra/help/compare).
"""

from __future__ import annotations

import functools
import re
import runpy
import shlex
import sys

import pytest
from helpers import CONF, ROOT
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from dropout_risk.compare.request import compose_compare_config

PIPELINES = ("train", "sweep", "reproduce", "predict", "compare")
# what each pipeline does: a phrase its help's description must hold
DESCRIPTION = {
    "train": "train one student dropout-risk MLP and track the run in MLflow",
    "sweep": "the learning-rate divergence sweep",
    "reproduce": "re-run a logged run or a saved config",
    "predict": "score new students with a logged model",
    "compare": "compare tracked runs side by side",
}
WITH_GROUPS = ("train", "sweep")  # the others set keys only
MAX_COLUMNS = 100


def _config_groups() -> dict[str, list[str]]:
    """{group: its options}: conf/<group>/*.yaml without the schemas; the hydra folder is Hydra's."""
    groups = {}
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name != "hydra"):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml") if not f.stem.endswith("_schema"))
    return groups


def _compose(pipeline: str, overrides: list[str] | None = None):
    """The pipeline's composed config (with hydra.runtime.choices for the groups)."""
    overrides = list(overrides or [])
    if pipeline == "compare":
        return compose_compare_config(overrides)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(pipeline if pipeline != "train" else "config", overrides=overrides,
                       return_hydra_config=True)


@pytest.fixture
def store_compare_help():
    """conf/hydra/help/compare.yaml in the ConfigStore, where the compare app can find it."""
    ConfigStore.instance().store(group="hydra/help", name="compare",
                                 node=OmegaConf.load(CONF / "hydra" / "help" / "compare.yaml"))


_printed: dict[tuple[str, ...], str] = {}  # each command line's help, printed once per test process


@pytest.fixture
def run_help(monkeypatch, capsys):
    """run_help("train", *args) -> what `python pipelines/train.py --help *args` prints (~0.7 s:
    Hydra lists every config group's options for $APP_CONFIG_GROUPS even when no template uses it)."""
    saved = HydraConfig.instance().cfg  # app_help sets it; later in-process runs read their overrides there

    def _run(pipeline: str, *args: str) -> str:
        if (pipeline, *args) in _printed:
            return _printed[(pipeline, *args)]
        script = ROOT / "pipelines" / f"{pipeline}.py"
        monkeypatch.setattr(sys, "argv", [str(script), "--help", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
        out, err = capsys.readouterr()
        assert exit_.value.code in (0, None), err
        _printed[(pipeline, *args)] = out
        return out

    yield _run
    HydraConfig.instance().cfg = saved


def _help_of(run_help, pipeline: str, *args: str) -> str:
    return run_help(pipeline, *args)


def _sections(text: str) -> dict[str, list[str]]:
    """{"header": lines before the first `== ... ==`, "groups"|"keys"|"examples": the section's lines}."""
    sections: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in text.splitlines():
        title = re.match(r"^== (Config groups|Main keys|Examples)\b.*==$", line)
        if title:
            current = {"Config groups": "groups", "Main keys": "keys", "Examples": "examples"}[title.group(1)]
            sections[current] = []
        else:
            sections[current].append(line)
    return sections


def _shown_defaults(keys_section: list[str]) -> dict[str, str]:
    """{key: value as printed} from the `  key=value   description` lines."""
    shown = {}
    for line in keys_section:
        m = re.match(r"^  ([\w.]+)=(\S+(?: \S+)*)(?: {2,}.*)?$", line)
        if m:
            shown[m.group(1)] = m.group(2)
    return shown


def _group_rows(groups_section: list[str]) -> dict[str, str]:
    """{group: its row's text, continuation lines included}."""
    rows: dict[str, str] = {}
    last = None
    for line in groups_section:
        m = re.match(r"^  (\w+) {2,}(.*)$", line)
        if m and m.group(1) != "group":
            last = m.group(1)
            rows[last] = m.group(2)
        elif last and line.startswith(" " * 4) and line.strip():
            rows[last] += " " + line.strip()
    return rows


# --------------------------------------------------------------------------------- every pipeline
@pytest.mark.usefixtures("store_compare_help")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_help_says_what_the_pipeline_does_with_examples(run_help, pipeline):
    out = _help_of(run_help, pipeline)
    sections = _sections(out)
    header = " ".join(line.strip() for line in sections["header"])
    assert sections["header"][0].startswith(f"{pipeline}.py: "), out
    assert DESCRIPTION[pipeline] in header, out
    # no Hydra boilerplate, no structured-schema entries, nothing wider than the terminal
    assert "powered by hydra" not in out.lower()
    assert "_schema" not in out
    too_wide = [line for line in out.splitlines() if len(line) > MAX_COLUMNS]
    assert not too_wide, too_wide
    # three example commands of this pipeline, each one that composes (placeholders aside)
    examples = [line.strip() for line in sections["examples"] if line.startswith("  ")]  # then the footer
    assert len(examples) == 3 and all(e.startswith(f"python pipelines/{pipeline}.py") for e in examples), examples
    for example in examples:
        args = shlex.split(example.split("  #")[0])[2:]
        if not any("<" in a for a in args):
            _compose(pipeline, args)
    # everything else: --cfg job and the README
    assert f"python pipelines/{pipeline}.py --cfg job" in out and "README.md" in out


@pytest.mark.usefixtures("store_compare_help")
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_every_default_shown_is_the_composed_configs(run_help, pipeline):
    shown = _shown_defaults(_sections(_help_of(run_help, pipeline))["keys"])
    assert len(shown) >= 5, shown
    cfg = _compose(pipeline)
    unresolved_cfg = OmegaConf.to_container(cfg, resolve=False)
    parser = OverridesParser.create()
    for key, printed in shown.items():
        unresolved = functools.reduce(lambda node, k: node[k], key.split("."), unresolved_cfg)
        if isinstance(unresolved, str) and "${now:" in unresolved:  # compare's out_dir: a time stamp
            assert printed == re.sub(r"\$\{now:[^}]*\}", "<date>_<time>", unresolved), key
            continue
        value = parser.parse_override(f"{key}={printed}").value()  # read as the command line reads it
        expected = OmegaConf.select(cfg, key, throw_on_missing=True)
        expected = OmegaConf.to_container(expected) if OmegaConf.is_config(expected) else expected
        assert value == expected and type(value) is type(expected), f"{key}: help {printed!r}, config {expected!r}"


@pytest.mark.parametrize("pipeline", ["train", "sweep"])
def test_every_option_of_every_group_is_listed_with_the_choice_in_effect(run_help, pipeline):
    rows = _group_rows(_sections(run_help(pipeline))["groups"])
    groups = _config_groups()
    assert set(rows) == set(groups), f"groups in the help {sorted(rows)}, in conf/ {sorted(groups)}"
    choices = _compose(pipeline).hydra.runtime.choices
    for group, options in groups.items():
        words = set(re.findall(r"\w+", rows[group]))
        missing = [o for o in options if o not in words]
        assert not missing, f"{pipeline} --help: group {group} does not list {missing} (conf/{group}/)"
        if choices.get(group) is not None:
            assert rows[group].split()[-1] == choices[group], (group, rows[group])


@pytest.mark.parametrize("pipeline", ["reproduce", "predict"])
def test_apps_without_groups_list_none(run_help, pipeline):
    groups = _sections(run_help(pipeline))["groups"]
    assert [line.strip() for line in groups if line.strip()] == ["none: set the keys below (key=value)"]


def test_train_and_sweep_each_show_their_own_help(run_help):
    """conf/sweep.yaml includes conf/config.yaml: its own help choice wins over train's."""
    train, sweep = run_help("train"), run_help("sweep")
    assert train.startswith("train.py: ") and "sweep.n_scan=" not in train
    assert sweep.startswith("sweep.py: ") and "sweep.n_scan=24" in sweep


def test_overrides_given_with_help_show_in_it(run_help):
    out = run_help("sweep", "optim=sgd", "sweep.n_scan=7")
    rows, shown = _group_rows(_sections(out)["groups"]), _shown_defaults(_sections(out)["keys"])
    assert rows["optim"].split()[-1] == "sgd"
    assert shown["sweep.n_scan"] == "7" and shown["optim.scan_range"] == "[0.001, 100.0]"


def test_compare_shows_its_help_by_itself(run_help):
    out = run_help("compare")
    assert out.startswith("compare.py: ") and "powered by Hydra" not in out
