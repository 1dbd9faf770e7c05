"""Configs are data: no value may run code or read the environment when it is resolved.

OmegaConf resolves `${name:...}` by calling the resolver `name` (`oc.create` builds nodes, and
with them `_target_`s; `oc.env` reads secrets that would then be logged; `oc.decode`, `now`, ...),
so a check made before resolution checks nothing, and resolving runs the resolvers. Hence, in this
order: refuse every resolver in the unresolved config (only plain `${a.b}` interpolations pass);
then resolve; then check the resolved values (`_target_` allow-list, optimiser arguments).

A config received from someone else (a saved config.yaml for reproduce, or a folder given to
plain Hydra with --config-path) passes `check_received` first: its defaults list may only name
the schema (as `saved_config_yaml` writes it) and its `hydra:` section may not hold code hooks
(callbacks, logging handlers, launcher, sweeper, ...), which Hydra runs before any check of ours.
"""

from __future__ import annotations

from typing import Any

from dropout_risk.errors import ConfigError

_HOW = "pass the value itself"

# The defaults entries a saved config carries (config/saved.py writes them): the schema only.
_SCHEMA_DEFAULTS = ("config_schema", "_self_")
_OPTIM_SCHEMA_DEFAULTS = ("adamw_schema", "sgd_schema")
# The hydra: settings a received config may hold: where Hydra writes its own files, nothing else.
_HARMLESS_HYDRA = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.output_subdir", "hydra.job.chdir")
_HYDRA_CODE = ("hydra.callbacks", "hydra.job_logging", "hydra.hydra_logging", "hydra.launcher", "hydra.sweeper",
               "hydra.job.env_set", "hydra.job.env_copy", "hydra.searchpath")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def resolvers_in(value: str) -> list[str]:
    """The resolvers a string calls when OmegaConf resolves it (outermost first), by OmegaConf's
    own grammar. Raises ValueError when the string is not a valid OmegaConf value."""
    from omegaconf import grammar_parser
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser as Parser

    if "${" not in value:
        return []
    try:
        tree = grammar_parser.parse(value, parser_rule="configValue")
    except GrammarParseError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    found: list[str] = []

    def walk(node) -> None:
        if isinstance(node, Parser.InterpolationResolverContext):
            found.append(node.resolverName().getText())
        for child in node.getChildren() if hasattr(node, "getChildren") else ():
            walk(child)

    walk(tree)
    return found


def check_value(value: str, key: str) -> None:
    """A string may hold plain `${a.b}` interpolations, no resolver call."""
    try:
        names = resolvers_in(value)
    except ValueError as exc:
        raise ConfigError(f"{key}={value!r} is not a valid interpolation ({exc}): write ${{other.key}} to use "
                          "another key's value, or the value itself") from None
    if names:
        raise ConfigError(f"configs are data: ${{{names[0]}:...}} at {key} is not allowed; {_HOW}")


def _each_string(node: Any, check, path: str = "") -> None:
    """Call check(string, key) for every string in a container of dicts and lists, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            _each_string(value, check, _join(path, key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _each_string(value, check, _join(path, i))
    elif isinstance(node, str):
        check(node, path)


def check_no_resolvers(node: Any, path: str = "") -> None:
    """Raise ConfigError for the first resolver call in an unresolved container (plain dicts and
    lists, e.g. from yaml.safe_load or OmegaConf.to_container(cfg, resolve=False))."""
    _each_string(node, lambda value, key: check_value(value, key or "the config"), path)


def check_config(cfg, path: str = "") -> dict:
    """A composed config (a DictConfig, or the node at `path` of one): no resolver anywhere, then
    resolved. Returns the resolved container, the only thing later checks and the optimiser read."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    check_no_resolvers(OmegaConf.to_container(cfg, resolve=False), path)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or path or "the config"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}; fix the interpolation or pass the value itself") from None
    check_resolved(resolved, path)
    return resolved  # type: ignore[return-value]


def check_resolved(node: Any, path: str = "") -> None:
    """No string of a resolved config may still read as an interpolation (an escaped `\\${...}`):
    re-created as a config (saved config.yaml, a sweep worker) it would be resolved after all."""

    def check(value: str, key: str) -> None:
        if "${" in value:
            raise ConfigError(f"configs are data: {key}={value!r} would be read as an interpolation when the "
                              "config is saved and re-run; pass the value without ${...}")

    _each_string(node, check, path)


def check_command_line(args: list[str]) -> None:
    """No override of this command line may call a resolver (`'+tags.pw=${oc.env:PGPASSWORD}'`
    would log the secret): the values as Hydra's own override parser reads them, sweeps included.
    Flags are skipped; an override Hydra cannot parse is left for Hydra to report."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "${" not in arg:
            continue
        try:
            [override] = parser.parse_overrides([arg])
        except HydraException:
            continue
        for text in _strings(override.value()):
            check_value(text, override.key_or_group)


def _strings(value: Any) -> list[str]:
    """The strings in an override's value: list and dict items, a sweep's choices, a glob's patterns."""
    from hydra.core.override_parser.types import ChoiceSweep, Glob

    if isinstance(value, str):
        return [value]
    if isinstance(value, ChoiceSweep):
        value = value.list
    elif isinstance(value, Glob):
        value = [*value.include, *value.exclude]
    elif isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    return [s for v in value for s in _strings(v)] if isinstance(value, list | tuple) else []


def _leaf_keys(node: Any, path: str) -> list[str]:
    if isinstance(node, dict) and node:
        return [k for key, value in node.items() for k in _leaf_keys(value, _join(path, key))]
    return [path]


def check_header(text: str) -> None:
    """No `# @package` directive: Hydra would put the file's keys elsewhere (`# @package hydra`
    turns `callbacks:` into hydra.callbacks); a saved config never has one."""
    import re

    found = re.search(r"^\s*#\s*@package\b.*$", text, re.M)
    if found:
        raise ConfigError(f"'{found.group(0).strip()}' is not allowed in a received config: it moves the file's keys "
                          "to another package (hydra: among them, where they run code); delete the line")


def check_received_text(text: str) -> dict:
    """A received config file's text: its header, then `check_received` on its YAML. Returns it."""
    import yaml

    check_header(text)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"not valid YAML{at}: fix the file or use the run's config/config.yaml") from None
    if not isinstance(raw, dict):
        raise ConfigError("not a dropout-risk config: expected keys such as seed, data, optim, trainer")
    check_received(raw)
    return raw


def check_received(raw: dict) -> None:
    """A config from someone else, as read from its file (before anything composes, merges or
    resolves it): the defaults list names only the schema, the hydra: section holds no code hook,
    and no value calls a resolver."""
    defaults = raw.get("defaults", [])
    for entry in defaults if isinstance(defaults, list) else [defaults]:
        ok = entry in _SCHEMA_DEFAULTS or (isinstance(entry, dict) and len(entry) == 1
                                           and entry.get("optim") in _OPTIM_SCHEMA_DEFAULTS)
        if not ok:
            raise ConfigError(f"defaults entry {entry!r} is not allowed in a received config: a saved config's "
                              "defaults name only the schema (config_schema, optim: adamw_schema or sgd_schema, "
                              "_self_); delete the entry")
    hydra = raw.get("hydra")
    if hydra not in (None, {}):
        keys = _leaf_keys(hydra, "hydra") if isinstance(hydra, dict) else ["hydra"]
        hooks = [hook for k in keys for hook in _HYDRA_CODE if k == hook or k.startswith(hook + ".")]
        other = [k for k in keys if k not in _HARMLESS_HYDRA]
        if hooks or other:
            key = (hooks or other)[0]
            what = "can run code" if hooks else "is not one of the hydra settings a received config may hold"
            raise ConfigError(f"{key} {what}: a received config may set only {', '.join(_HARMLESS_HYDRA)}; "
                              f"delete {key} (dropout-risk never saves a hydra: section)")
    check_no_resolvers(raw)
