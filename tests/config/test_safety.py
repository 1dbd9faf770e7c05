"""Configs are data (issue 14 A): nothing in a config may run code, read the environment or end in
a traceback. Every bad input of the catalogue below goes in by the way a user would give it, in
process: the command line through preflight(argv=...) (what the pipelines call before Hydra), a
saved config through reproduce config=F or run_id= (the run's config/config.yaml edited), a folder
through plain Hydra's --config-path (preflight again), and a composed config straight into train()
(what a Hydra multirun reaches). Each must end in one `error: ` line, exit code 2, and leave the
store without a new run (none RUNNING, none FAILED)."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest
import yaml
from helpers import CONF, TINY, run_statuses
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient

from dropout_risk.cli.preflight import preflight
from dropout_risk.cli.run import run_cli
from dropout_risk.config.safety import check_received, resolvers_in
from dropout_risk.config.saved import saved_config_yaml
from dropout_risk.config.validate import validate
from dropout_risk.errors import ConfigError

SECRET = "s3cr3t-Do-Not-Log-7731"
COPIED = "copied-by-a-config"  # the file the oc.create attack tries to write (beside the test's store)


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_store) -> dict[str, str]:
    """This module's own store (overrides conftest's): runs are counted by status in it."""
    return new_store(tmp_path_factory.mktemp("safety-mlruns"))


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)


def _store_args(store) -> list[str]:
    return [f"tracking.uri={store['uri']}", f"tracking.artifact_location={store['artifacts']}"]


def _compose(store, *overrides: str, config: str = "config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        if config == "reproduce":
            return compose(config, overrides=[f"tracking.uri={store['uri']}", *overrides])
        return compose(config, overrides=[*TINY, *_store_args(store), *overrides])


@pytest.fixture(scope="module")
def saved(store) -> dict:
    """A genuine saved config (what a run logs as config/config.yaml), as YAML data."""
    return yaml.safe_load(saved_config_yaml(_compose(store)))


def _statuses(store) -> collections.Counter:
    return collections.Counter(run_statuses(store["uri"]).values())


# --------------------------------------------------------------------------- how a case goes in
# Each prepares what the case needs (files, a planted run) and returns the call that takes the input.
def _cli(args, store, tmp_path, saved):
    return lambda: preflight(argv=[*args, *_store_args(store)])


def _config_file(edit, store, tmp_path, saved):
    """reproduce config=F with F the genuine saved config edited (edit(data) or edit -> text)."""
    from dropout_risk.reproduce.run import run_reproduce

    path = tmp_path / "config.yaml"
    path.write_text(_edited(edit, saved, tmp_path))
    req = _compose(store, f"config={path}", config="reproduce")
    return lambda: run_cli(lambda: run_reproduce(req, echo=lambda _: None, warn=lambda _: None))


def _stored_run(edit, store, tmp_path, saved):
    """reproduce run_id=<a FINISHED run whose config/config.yaml was edited in the store>."""
    from dropout_risk.reproduce.run import run_reproduce

    client = MlflowClient(store["uri"])
    exp = client.get_experiment_by_name("edited")
    exp_id = exp.experiment_id if exp else client.create_experiment("edited", f"{store['artifacts']}/edited")
    run_id = client.create_run(exp_id, run_name="edited-config").info.run_id
    client.log_text(run_id, _edited(edit, saved, tmp_path), "config/config.yaml")
    client.set_terminated(run_id)
    req = _compose(store, f"run_id={run_id}", config="reproduce")
    return lambda: run_cli(lambda: run_reproduce(req, echo=lambda _: None, warn=lambda _: None))


def _plain_hydra(edit, store, tmp_path, saved):
    """pipelines/train.py --config-path DIR --config-name config, DIR holding the edited config."""
    folder = tmp_path / "received"
    folder.mkdir()
    (folder / "config.yaml").write_text(_edited(edit, saved, tmp_path))
    return lambda: preflight(argv=["--config-path", str(folder), "--config-name", "config"])


def _train(args, store, tmp_path, saved):
    """A composed config straight into train(): what a Hydra multirun (-m) job gets."""
    from dropout_risk.training.train import train

    cfg = _compose(store, *args)
    return lambda: run_cli(lambda: train(cfg))


def _edited(edit, saved, tmp_path) -> str:
    data = yaml.safe_load(yaml.safe_dump(saved))
    data["tracking"]["run_name"] = None
    out = edit(data, tmp_path)
    return out if isinstance(out, str) else yaml.safe_dump(data, sort_keys=False)


def _set(key: str, value):
    """An edit that sets the dotted `key` (creating dicts on the way)."""

    def edit(data, tmp_path):
        *parents, last = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value(tmp_path) if callable(value) else value

    return edit


def _with_header(line: str):
    return lambda data, tmp_path: f"{line}\n" + yaml.safe_dump(data, sort_keys=False)


def _copy_attack(tmp_path) -> str:
    return ("${oc.create:'{_target_: shutil.copyfile, _args_: [\"/etc/hostname\", \"" + str(tmp_path / COPIED)
            + "\"]}'}")


def _adam_with_extra(data, tmp_path):
    """The issue's attack: an allow-listed optimiser, and a key whose resolution builds a target."""
    data["optim"]["_target_"] = "torch.optim.Adam"
    data["optim"]["extra"] = _copy_attack(tmp_path)


def _target_by_interpolation(data, tmp_path):
    data["tags"] = {"t": "os.system"}
    data["optim"]["_target_"] = "${tags.t}"


ENV = "${oc.env:PGPASSWORD}"
IS_DATA = "configs are data: ${{{}:...}} at {} is not allowed; pass the value itself"

# (id, how it goes in, what goes in, a part of the one error line)
CATALOGUE = [
    # the command line (preflight, before Hydra)
    ("cli-oc-env-set", _cli, [f"+tags.pw={ENV}"], IS_DATA.format("oc.env", "tags.pw")),
    ("cli-oc-env-unset", _cli, ["+tags.pw=${oc.env:DROPOUT_RISK_NOT_SET_ANYWHERE}"], IS_DATA.format("oc.env", "tags.pw")),
    ("cli-oc-env-in-a-multirun-sweep", _cli, ["-m", f"optim.lr=1e-3,{ENV}"], IS_DATA.format("oc.env", "optim.lr")),
    ("cli-oc-env-in-a-list", _cli, [f"model.hidden=[16,{ENV}]"], IS_DATA.format("oc.env", "model.hidden")),
    ("cli-oc-decode", _cli, ["optim.lr=${oc.decode:'1e-3'}"], IS_DATA.format("oc.decode", "optim.lr")),
    ("cli-custom-resolver", _cli, ["+tags.when=${now:%Y}"], IS_DATA.format("now", "tags.when")),
    ("cli-oc-create-builds-a-target", _cli,
     ["optim._target_=torch.optim.Adam", "+optim.extra=\"${oc.create:'{_target_: shutil.copyfile}'}\""],
     IS_DATA.format("oc.create", "optim.extra")),
    ("cli-escaped-interpolation", _cli, ["+tags.x=\\${oc.env:PGPASSWORD}"], "tags.x='${oc.env:PGPASSWORD}' would be read as an interpolation"),
    ("cli-plus-optim-foo", _cli, ["+optim.foo=1"], "optim.foo is not an argument of torch.optim.AdamW: remove it (~optim.foo)"),
    ("cli-sgd-target-with-adamw-keys", _cli, ["optim._target_=torch.optim.SGD"],
     "optim.betas is not an argument of torch.optim.SGD"),
    ("cli-sgd-nesterov-without-momentum", _cli, ["optim=sgd", "optim.nesterov=true"],
     "optim: torch.optim.SGD refuses these arguments (Nesterov momentum requires a momentum and zero dampening)"),
    ("cli-target-by-plain-interpolation", _cli, ["+tags.t=os.system", "optim._target_=${tags.t}"],
     "optim._target_='os.system' is not allowed"),
    ("cli-lr-inf", _cli, ["optim.lr=inf"], "optim.lr=inf must be a finite number"),
    ("cli-lr-nan", _cli, ["optim.lr=nan"], "optim.lr=nan must be a finite number"),
    ("cli-gpu-without-cuda", _cli, ["trainer.accelerator=gpu"], "pass trainer.accelerator=cpu"),
    ("cli-top-level-plus-foo", _cli, ["+foo=1"], "unknown config key 'foo'"),
    ("cli-nested-plus-foo", _cli, ["+data.foo=1"], "unknown config key 'data.foo'"),
    ("cli-experimental-rerun-pickle", _cli, ["--experimental-rerun", "config.pickle"], "--experimental-rerun loads a pickle"),
    # a composed config straight into train() (a multirun job: preflight leaves -m to Hydra)
    ("train-oc-env", _train, [f"+tags.pw={ENV}"], IS_DATA.format("oc.env", "tags.pw")),
    ("train-plus-optim-foo", _train, ["+optim.foo=1"], "optim.foo is not an argument of torch.optim.AdamW"),
    ("train-gpu-without-cuda", _train, ["trainer.accelerator=gpu"], "pass trainer.accelerator=cpu"),
    # a saved config: reproduce config=F
    ("file-oc-create-builds-a-target", _config_file, _adam_with_extra, IS_DATA.format("oc.create", "optim.extra")),
    ("file-oc-create-at-depth", _config_file, _set("baselines.models.logreg.C", _copy_attack),
     IS_DATA.format("oc.create", "baselines.models.logreg.C")),
    ("file-oc-create-in-a-list", _config_file, _set("model.hidden", lambda tmp: [16, _copy_attack(tmp)]),
     IS_DATA.format("oc.create", "model.hidden.1")),
    ("file-oc-decode", _config_file, _set("optim.lr", "${oc.decode:'0.1'}"), IS_DATA.format("oc.decode", "optim.lr")),
    ("file-oc-select", _config_file, _set("seed", "${oc.select:data.seed, 0}"), IS_DATA.format("oc.select", "seed")),
    ("file-custom-resolver", _config_file, _set("tracking.run_name", "run-${now:%H%M}"),
     IS_DATA.format("now", "tracking.run_name")),
    ("file-oc-env-set", _config_file, _set("tags.pw", ENV), IS_DATA.format("oc.env", "tags.pw")),
    ("file-oc-env-unset", _config_file, _set("tags.pw", "${oc.env:DROPOUT_RISK_NOT_SET_ANYWHERE}"),
     IS_DATA.format("oc.env", "tags.pw")),
    ("file-target-by-plain-interpolation", _config_file, _target_by_interpolation,
     "optim._target_='${tags.t}' is not allowed"),
    ("file-escaped-interpolation", _config_file, _set("tags.x", "\\${oc.env:PGPASSWORD}"),
     "would be read as an interpolation"),
    ("file-hydra-callbacks", _config_file,
     _set("hydra.callbacks.x", {"_target_": "shutil.copyfile", "_args_": ["/etc/hostname", "/tmp/x"]}),
     "hydra.callbacks can run code"),
    ("file-lr-inf", _config_file, _set("optim.lr", float("inf")), "optim.lr=inf must be a finite number"),
    ("file-sgd-target-with-adamw-keys", _config_file, _set("optim._target_", "torch.optim.SGD"),
     "unknown config key 'optim.betas'"),
    ("file-adam-target-with-an-unknown-key", _config_file,
     lambda d, tmp: d["optim"].update({"_target_": "torch.optim.Adam", "foo": 1}),
     "optim.foo is not an argument of torch.optim.Adam"),
    ("file-gpu-without-cuda", _config_file, _set("trainer.accelerator", "gpu"),
     "trains on trainer.accelerator=gpu and this machine has no CUDA device"),
    # a logged run whose config/config.yaml was edited: reproduce run_id=
    ("run-oc-create-builds-a-target", _stored_run, _adam_with_extra, IS_DATA.format("oc.create", "optim.extra")),
    ("run-oc-env", _stored_run, _set("tags.pw", ENV), IS_DATA.format("oc.env", "tags.pw")),
    ("run-defaults-beyond-the-schema", _stored_run,
     _set("defaults", ["config_schema", {"override hydra/job_logging": "evil"}, "_self_"]),
     "defaults entry {'override hydra/job_logging': 'evil'} is not allowed"),
    # a folder given to plain Hydra: train.py --config-path DIR --config-name config
    ("hydra-callbacks", _plain_hydra,
     _set("hydra.callbacks.x", {"_target_": "shutil.copyfile", "_args_": ["/etc/hostname", "/tmp/x"]}),
     "hydra.callbacks can run code: a received config may set only hydra.run.dir"),
    ("hydra-job-logging-handler-class", _plain_hydra,
     _set("hydra.job_logging", {"version": 1, "handlers": {"h": {"class": "evil.Handler"}}, "root": {"handlers": ["h"]}}),
     "hydra.job_logging can run code"),
    ("hydra-logging-factory", _plain_hydra, _set("hydra.hydra_logging.formatters.f", {"()": "evil.factory"}),
     "hydra.hydra_logging can run code"),
    ("hydra-launcher-target", _plain_hydra, _set("hydra.launcher._target_", "os.system"), "hydra.launcher can run code"),
    ("hydra-sweeper-target", _plain_hydra, _set("hydra.sweeper._target_", "os.system"), "hydra.sweeper can run code"),
    ("hydra-env-set", _plain_hydra, _set("hydra.job.env_set.LD_PRELOAD", "/tmp/evil.so"), "hydra.job.env_set can run code"),
    ("hydra-package-header", _plain_hydra, _with_header("# @package hydra"), "'# @package hydra' is not allowed"),
    ("hydra-defaults-choose-a-group", _plain_hydra, _set("defaults", ["config_schema", {"data": "csv"}, "_self_"]),
     "defaults entry {'data': 'csv'} is not allowed"),
    ("hydra-oc-env", _plain_hydra, _set("tags.pw", ENV), IS_DATA.format("oc.env", "tags.pw")),
    ("hydra-oc-create-builds-a-target", _plain_hydra, _adam_with_extra, IS_DATA.format("oc.create", "optim.extra")),
    ("hydra-unknown-key", _plain_hydra, _set("foo", 1), "unknown config key 'foo'"),
]


@pytest.mark.parametrize("how, what, needle", [pytest.param(*c[1:], id=c[0]) for c in CATALOGUE])
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(how, what, needle, store, saved, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.setenv("PGPASSWORD", SECRET)
    go = how(what, store, tmp_path, saved)
    before = _statuses(store)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        go()
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert SECRET not in err
    after = _statuses(store)
    assert after == before and after["RUNNING"] == 0 and after["FAILED"] == 0, (before, after)
    assert not (tmp_path / COPIED).exists()  # nothing was built


def test_the_catalogue_covers_every_way_in():
    ids = [c[0] for c in CATALOGUE]
    assert len(ids) == len(set(ids)) and len(ids) >= 15
    assert {c[1] for c in CATALOGUE} == {_cli, _train, _config_file, _stored_run, _plain_hydra}


def _store_bytes(store) -> list[tuple[str, bytes]]:
    root = Path(store["root"])
    return [(str(p), p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def test_no_environment_value_reaches_the_store(store, saved, tmp_path, capsys, monkeypatch):
    """${oc.env:PGPASSWORD} on the command line, in a saved config (config=F) and in a logged run's
    edited config (run_id=): refused, and the secret is nowhere in the store (the SQLite file with
    every param and tag, every artifact file)."""
    monkeypatch.setenv("PGPASSWORD", SECRET)
    ways = [(_cli, [f"+tags.pw={ENV}"]), (_cli, [f"+tags.pw='{ENV}'"]), (_train, [f"+tags.pw={ENV}"]),
            (_config_file, _set("tags.pw", ENV)), (_stored_run, _set("tags.pw", ENV))]
    for i, (how, what) in enumerate(ways):
        folder = tmp_path / str(i)
        folder.mkdir()
        go = how(what, store, folder, saved)
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            go()
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: "), err
        assert "configs are data: ${oc.env:...} at tags.pw is not allowed; pass the value itself" in err
    files = _store_bytes(store)
    assert any(name.endswith("mlflow.db") for name, _ in files)
    assert any("config.yaml" in name for name, _ in files)  # the edited run's artifact was searched too
    leaked = [name for name, data in files if SECRET.encode() in data]
    assert leaked == []


def test_a_genuine_config_passes_every_check(store, saved, tmp_path, capsys):
    """The control: the same ways in accept an unedited config (the refusals are about the edits)."""
    from dropout_risk.config.saved import load_config_text

    text = yaml.safe_dump(saved, sort_keys=False)
    check_received(saved)
    validate(load_config_text(text, "config file x.yaml"))
    folder = tmp_path / "genuine"
    folder.mkdir()
    (folder / "config.yaml").write_text(text)
    preflight(argv=["--config-path", str(folder), "--config-name", "config"])
    preflight(argv=["optim.weight_decay=${optim.lr}", "+tags.note=plain text", *_store_args(store)])
    assert capsys.readouterr() == ("", "")


def test_gpu_is_accepted_where_cuda_is(store, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    validate(_compose(store, "trainer.accelerator=gpu"))


@pytest.mark.parametrize("value, names", [
    ("plain text", []), ("${a.b}", []), ("x ${a.b} y ${c}", []), ("\\${oc.env:X}", []),
    ("${oc.env:X}", ["oc.env"]), ("${oc.env:X,default}", ["oc.env"]), ("'${oc.create:'{a: 1}'}'", ["oc.create"]),
    ("${a.${oc.env:K}}", ["oc.env"]), ("${oc.decode:${oc.env:K}}", ["oc.decode", "oc.env"]),
    ("${ now :%Y}", ["now"]), ("${${name}:x}", ["${name}"]),
])
def test_resolver_calls_are_found_by_omegaconfs_grammar(value, names):
    assert resolvers_in(value) == names


def test_an_interpolation_omegaconf_cannot_parse_is_one_line(saved):
    data = yaml.safe_load(yaml.safe_dump(saved))
    data["tags"] = {"x": "${oops"}
    with pytest.raises(ConfigError, match=re.escape("tags.x='${oops' is not a valid interpolation")) as info:
        check_received(data)
    assert "\n" not in str(info.value)
