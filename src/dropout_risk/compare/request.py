"""The compare app's request: its config composed from conf/compare.yaml, its argv, its errors."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hydra.core.config_store import ConfigStore

from dropout_risk.config.paths import CONF_DIR
from dropout_risk.config.schema import CompareConfig

COMPARE_YAML = CONF_DIR / "compare.yaml"


def register_compare_config() -> None:
    """Register the schema (`compare_schema`, named in the defaults list of conf/compare.yaml:
    typos fail early) and conf/compare.yaml itself as the config `compare`.

    The compare app composes from the ConfigStore, not from the conf/ folder: conf/ holds the
    training app's config groups `sweep/` and `experiment/`, and Hydra would read the overrides
    `sweep=<id>` and `experiment=<name>` as choices of those groups."""
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="compare_schema", node=CompareConfig)
    cs.store(name="compare", node=OmegaConf.load(COMPARE_YAML))
    cs.store(group="hydra/help", name="compare", node=OmegaConf.load(CONF_DIR / "hydra" / "help" / "compare.yaml"))


_GROUP_NAMED_KEYS = ("sweep", "experiment")  # also config groups of the training app


def compose_compare_config(overrides: Sequence[str] = ()):
    """The composed compare config, as the pipeline gets it (for preflight, tests and notebooks).

    In a process that also registered the training schema (register_configs: tests, notebooks)
    the ConfigStore has a `sweep` group, so `sweep=`/`experiment=` are applied after composition."""
    from hydra import compose, initialize
    from hydra.core.override_parser.overrides_parser import OverridesParser

    register_compare_config()
    args = normalize_argv(overrides)
    late = [a for a in args if a.split("=", 1)[0] in _GROUP_NAMED_KEYS]
    with initialize(version_base="1.3", config_path=None):
        cfg = compose("compare", overrides=[a for a in args if a not in late])
    for override in OverridesParser.create().parse_overrides(late):
        setattr(cfg, override.key_or_group, override.value())
    return cfg


def preflight(argv: Sequence[str] | None = None) -> None:
    """cli.preflight.preflight for the compare config: compose once before Hydra does, so that a bad
    override ends in one line (`error: ...`, exit 2). Flags (--cfg, --help, ...) are left to Hydra."""
    import sys

    from hydra.errors import OverrideParseException

    from dropout_risk.config.explain import explain_error
    from dropout_risk.config.safety import check_command_line
    from dropout_risk.errors import ConfigError

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        check_command_line(args)  # configs are data: no ${oc.env:...} or other resolver
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if any(a.startswith("-") for a in args):
        return
    try:
        compose_compare_config(args)
    except Exception as exc:  # noqa: BLE001 - any composition error becomes one line
        if isinstance(exc, OverrideParseException):
            bad = next((a for a in args if a.split("=", 1)[0] in str(exc)), None) or str(exc).splitlines()[0]
            msg = (f"cannot parse the override {bad!r}: write key=value, lists as runs=[id1,id2], and quote "
                   "values with special characters, e.g. 'out_dir=\"my dir\"'")
        else:
            msg = explain_error(exc, args)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)


def normalize_argv(args: Sequence[str]) -> list[str]:
    """Make the command lines of the README work under Hydra's override grammar:
    `filter=tags.outcome = 'converged'` (quotes, backticks, spaces) and `experiment=...` become
    quoted strings, `runs=a,b` and `runs=a` become the list `runs=[a,b]`."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in ("filter", "experiment") and value not in ("", "null") and value[0] not in "'\"":
            # Hydra's quoted strings: escape quotes, and backslashes only before a quote or the end
            escaped = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
                             value)
            arg = f'{key}="{escaped}"'
        elif sep and key == "runs" and value and not value.startswith("["):
            arg = f"runs=[{value}]"
        out.append(arg)
    return out
