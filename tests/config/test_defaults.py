"""Defaults live in one place, conf/: every field default of the schema dataclasses
(src/dropout_risk/config/schema.py) is either MISSING (`???`, the YAML sets it) or exactly the
value the YAML composes at that key. A second, different value in a dataclass is a trap: a reader
cannot tell which one is real, and it becomes real wherever a composition lacks the YAML.

Which dataclass sits at which key is read from the composed configs themselves (a structured
node knows its dataclass), so a new group option or a new dataclass is checked without editing
this file; EXPECTED_HOMES spells the map out for the reader and catches a schema that went unused.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from dropout_risk.config import schema
from dropout_risk.config.schema import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"

# (app, key) of every dataclass in the composed configs. OptimConfig is the base of both optimiser
# schemas: its defaults are checked wherever AdamWConfig or SGDConfig is composed.
EXPECTED_HOMES = {
    schema.Config: {("config", ""), ("sweep", "")},
    schema.DataConfig: {("config", "data"), ("sweep", "data")},
    schema.ModelConfig: {("config", "model"), ("sweep", "model")},
    schema.OptimConfig: {("config", "optim"), ("sweep", "optim")},
    schema.AdamWConfig: {("config", "optim"), ("sweep", "optim")},
    schema.SGDConfig: {("config", "optim")},
    schema.LossConfig: {("config", "loss"), ("sweep", "loss")},
    schema.TrainerConfig: {("config", "trainer"), ("sweep", "trainer")},
    schema.GuardConfig: {("config", "guard"), ("sweep", "guard")},
    schema.MechanismConfig: {("config", "mechanism"), ("sweep", "mechanism")},
    schema.StabilityConfig: {("config", "stability"), ("sweep", "stability")},
    schema.PitfallConfig: {("config", "pitfall"), ("sweep", "pitfall")},
    schema.CalibrationConfig: {("config", "calibration"), ("sweep", "calibration")},
    schema.TrackingConfig: {("config", "tracking"), ("sweep", "tracking")},
    schema.EarlyStoppingConfig: {("config", "trainer.early_stopping"), ("sweep", "trainer.early_stopping")},
    schema.BaselinesConfig: {("config", "baselines"), ("sweep", "baselines")},
    schema.SweepConfig: {("config", "sweep"), ("sweep", "sweep")},
    schema.PrunerConfig: {("config", "sweep.pruner"), ("sweep", "sweep.pruner")},
    schema.ReproduceConfig: {("reproduce", "")},
    schema.ReproduceTrackingConfig: {("reproduce", "tracking")},
    schema.CompareConfig: {("compare", "")},
    schema.CompareTrackingConfig: {("compare", "tracking")},
    schema.PredictConfig: {("predict", "")},
    schema.PredictDataConfig: {("predict", "data")},
    schema.PredictTrackingConfig: {("predict", "tracking")},
}


# --- the checker -------------------------------------------------------------------------------


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING  # no default at all: Hydra treats it as MISSING


def _composed(node):
    if isinstance(node, DictConfig | ListConfig):
        return None if node._is_none() else OmegaConf.to_container(node, resolve=False)
    return node._value()  # an interpolation stays as written, e.g. ${now:...}


def _structured(node) -> bool:
    return isinstance(node, DictConfig) and not node._is_none() and not node._is_missing() \
        and dataclasses.is_dataclass(OmegaConf.get_type(node))


def default_mismatches(cfg: DictConfig, label: str, homes: dict | None = None) -> list[str]:
    """One line per dataclass field whose default is neither MISSING nor the value `cfg` (a
    composed config, label e.g. "config optim=sgd") has at that key. Walks every structured node,
    checking the defaults of its dataclass and of that dataclass's dataclass bases; records
    (label's app, key) per dataclass in `homes`."""
    problems: list[str] = []

    def walk(node: DictConfig, path: str) -> None:
        typ = OmegaConf.get_type(node)
        for cls in (c for c in typ.__mro__ if dataclasses.is_dataclass(c)):
            if homes is not None:
                homes.setdefault(cls, set()).add((label.split()[0], path))
            for f in dataclasses.fields(cls):
                key = f"{path}.{f.name}" if path else f.name
                default, child = _default(f), node._get_node(f.name)
                if child is None:
                    problems.append(f"{label}: {key} is not in the composed config ({cls.__name__}.{f.name})")
                elif _structured(child):
                    # a nested schema (default: its dataclass) or an optional group that was chosen
                    # (default None); its own fields are checked below
                    if not (default is None or default == MISSING or dataclasses.is_dataclass(default)):
                        problems.append(f"{label}: {cls.__name__}.{f.name} = {default!r} but {key} is a group")
                elif not (isinstance(default, str) and default == MISSING) and default != _composed(child):
                    problems.append(f"{label}: {cls.__name__}.{f.name} = {default!r} in the dataclass, but "
                                    f"the YAML composes {key} = {_composed(child)!r}: make it MISSING or "
                                    "the YAML's value")
        for k in node:
            child = node._get_node(k)
            if _structured(child):
                walk(child, f"{path}.{k}" if path else str(k))

    walk(cfg, "")
    return problems


# --- the compositions --------------------------------------------------------------------------


def _group_options() -> tuple[dict[str, list[str | None]], dict[str, list[str | None]]]:
    """conf/<group>/<option>.yaml: (schema groups, overlay groups), each group's options with
    conf/config.yaml's choice first (None where it chooses none). An overlay (`# @package
    _global_`: debug=fast, the experiment presets) changes values on purpose; its compositions must
    still compose with nothing left MISSING."""
    import yaml

    entries = yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
    chosen = {k: v for e in entries if isinstance(e, dict) for k, v in e.items()}
    groups: dict[str, list[str | None]] = {}
    overlays: dict[str, list[str | None]] = {}
    for folder in sorted(p for p in CONF.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.yaml"))
        first = chosen.get(folder.name)
        options = [first, *(f.stem for f in files if f.stem != first)]
        kind = overlays if all("@package _global_" in f.read_text() for f in files) else groups
        kind[folder.name] = options
    return groups, overlays


def _rounds(groups: dict[str, list[str | None]]) -> list[list[str]]:
    """Every option of every group in as few compositions as the largest group has options;
    round 0 is conf/config.yaml's own choices (no overrides)."""
    n = max(len(options) for options in groups.values())
    return [[f"{g}={opts[i]}" for g, opts in groups.items() if i < len(opts) and opts[i] is not None]
            for i in range(1, n)]


@pytest.fixture(scope="module")
def composed() -> dict[str, tuple[DictConfig, bool]]:
    """label -> (composed config, whether its values are defaults): each app (training, sweep,
    reproduce, predict, compare), every option of every schema group, every overlay option."""
    register_configs()
    groups, overlays = _group_options()
    out: dict[str, tuple[DictConfig, bool]] = {}
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for app in ("config", "sweep", "reproduce", "predict"):
            out[app] = (compose(app), True)
        for overrides in _rounds(groups):
            out[" ".join(["config", *overrides])] = (compose("config", overrides=overrides), True)
        for overrides in _rounds(overlays):
            out[" ".join(["config", *overrides])] = (compose("config", overrides=overrides), False)
    from dropout_risk.compare.request import compose_compare_config

    out["compare"] = (compose_compare_config(), True)
    return out


def test_the_compositions_cover_every_option(composed):
    groups, overlays = _group_options()
    chosen = {tok for label in composed for tok in label.split()[1:]}
    defaults = {f"{g}={opts[0]}" for g, opts in {**groups, **overlays}.items() if opts[0] is not None}
    never = [f"{g}={o}" for g, opts in {**groups, **overlays}.items() for o in opts
             if o is not None and f"{g}={o}" not in chosen | defaults]
    assert not never, f"never composed: {never}"
    assert len(composed) <= 12, "keep this module fast: pack options into fewer compositions"


# --- the tests ---------------------------------------------------------------------------------


def test_every_dataclass_default_is_missing_or_the_yaml_value(composed):
    problems = [p for label, (cfg, defaults) in composed.items() if defaults for p in default_mismatches(cfg, label)]
    assert not problems, "schema defaults that differ from conf/:\n" + "\n".join(problems)


def test_every_schema_dataclass_sits_where_expected(composed):
    homes: dict[type, set] = {}
    for label, (cfg, defaults) in composed.items():
        if defaults:
            default_mismatches(cfg, label, homes)
    in_schema = {c for _, c in inspect.getmembers(schema, inspect.isclass)
                 if dataclasses.is_dataclass(c) and c.__module__ == schema.__name__}
    unused = sorted(c.__name__ for c in in_schema - homes.keys())
    assert not unused, f"dataclasses in schema.py no composed config uses (their defaults go unchecked): {unused}"
    got = {c: homes[c] for c in in_schema}
    wrong = {c.__name__: (sorted(got[c]), sorted(EXPECTED_HOMES.get(c, ()))) for c in in_schema
             if got[c] != EXPECTED_HOMES.get(c)}
    assert not wrong, f"dataclass: (composed at, EXPECTED_HOMES): {wrong}"


def test_nothing_is_left_missing(composed):
    """MISSING is only safe where every composition sets the key: each app, each group option and
    each overlay (debug, experiment presets) composes complete."""
    missing = {label: sorted(OmegaConf.missing_keys(cfg)) for label, (cfg, _) in composed.items()}
    assert not {k: v for k, v in missing.items() if v}, missing


# --- the checker can fail ----------------------------------------------------------------------


@dataclasses.dataclass
class _Inner:
    a: int = 1
    b: str = MISSING
    items: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


@dataclasses.dataclass
class _Outer:
    n: int = 3
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    opt: _Inner | None = None


def test_the_checker_names_a_default_that_differs():
    yaml_values = {"n": 3, "inner": {"a": 2, "b": "x", "items": [1, 2]}, "opt": {"a": 1, "b": "y", "items": [3]}}
    cfg = OmegaConf.merge(OmegaConf.structured(_Outer), yaml_values)
    problems = default_mismatches(cfg, "toy")
    assert len(problems) == 2, problems
    assert "_Inner.a = 1 in the dataclass, but the YAML composes inner.a = 2" in problems[0]
    assert "_Inner.items = [1, 2] in the dataclass, but the YAML composes opt.items = [3]" in problems[1]
    agreeing = OmegaConf.merge(OmegaConf.structured(_Outer), {"inner": {"b": "x"}, "opt": None})
    assert default_mismatches(agreeing, "toy") == []


def test_a_changed_trainer_default_fails(monkeypatch, composed):
    """What the main test sees if someone puts a second value in the dataclass again."""
    fields = schema.TrainerConfig.__dataclass_fields__
    monkeypatch.setattr(fields["max_epochs"], "default", 21)
    problems = default_mismatches(composed["config"][0], "config")
    assert problems == ["config: TrainerConfig.max_epochs = 21 in the dataclass, but the YAML composes "
                        "trainer.max_epochs = 20: make it MISSING or the YAML's value"]
