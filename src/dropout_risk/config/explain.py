"""One line for a Hydra/OmegaConf composition error: the key, the problem, the fix."""

from __future__ import annotations


def _group_options(group: str) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    return [o for o in loader.get_group_options(group) if not o.endswith("_schema")]


def _is_free_form(node) -> bool:
    """A dict node whose keys are the user's own (`tags`), not a schema dataclass's fields."""
    from omegaconf import DictConfig, OmegaConf

    return isinstance(node, DictConfig) and OmegaConf.get_type(node) is dict


def explain_error(exc: BaseException, overrides: list[str]) -> str:
    """One line for a Hydra/OmegaConf composition error: the key, the problem, the fix."""
    import difflib
    import re

    from hydra.errors import MissingConfigException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause: BaseException = exc
    while not isinstance(cause, OmegaConfBaseException) and (cause.__cause__ or cause.__context__) is not None:
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    if isinstance(exc, MissingConfigException) or "Could not find" in str(exc):
        found = re.search(r"Could not find '([^']+)'", str(exc))
        group = found.group(1).rsplit("/", 1)[0] if found else ""
        choice = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == group), "?")
        opts = _group_options(group) if group else []
        return f"{group}={choice} is not an option: choose one of {', '.join(opts)} (e.g. {group}={opts[0] if opts else '...'})"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError):
        full_key = getattr(cause, "full_key", "") or ""
        parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        known: list[str] = []
        node = getattr(cause, "parent_node", None)
        if node is not None:
            known = [str(k) for k in node.keys() if not str(k).startswith("_") and not (k == "hydra" and not parent)]
        if node is not None and _is_free_form(node) and full_key:  # tags, baselines.models.<name>: + adds a key
            value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == full_key), "<value>")
            return f"'{full_key}' is not set, so it cannot be overridden: add it with +{full_key}={value}"
        close = difflib.get_close_matches(full_key.rsplit(".", 1)[-1], known, n=1)
        hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else (
            f"keys here: {', '.join(known)}" if known else "check the spelling against conf/")
        return f"unknown config key '{full_key}': {hint}"
    if isinstance(cause, OmegaConfBaseException):
        msg = str(cause).splitlines()[0]
        key = getattr(cause, "full_key", "")
        return f"{key}: {msg}" if key else msg
    return str(exc).splitlines()[0]
