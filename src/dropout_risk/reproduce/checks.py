"""What must match before a re-run means anything: the data, the code, the device."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from omegaconf import DictConfig

from dropout_risk.errors import ReproduceError
from dropout_risk.tracking.names import TAG_DATA_FINGERPRINT


def parse_fingerprint(tag: str | None) -> dict | None:
    """The `data_fingerprint` tag: JSON (current) or a Python dict literal (runs before JSON)."""
    if not tag:
        return None
    try:
        value = json.loads(tag)
    except ValueError:
        try:
            value = ast.literal_eval(tag)
        except (ValueError, SyntaxError):
            return None
    return value if isinstance(value, dict) else None


def data_changes(original: dict, now: dict) -> tuple[list[str], list[str]]:
    """(changes that alter the data or split, harmless ones such as the file's path)."""
    changed, moved = [], []
    for key in sorted(set(original) | set(now)):
        a, b = original.get(key), now.get(key)
        if str(a) == str(b):
            continue
        if key == "path":
            moved.append(f"path {a} -> {b}")
        else:
            short = lambda v: str(v)[:12] + "…" if len(str(v)) > 13 else str(v)  # noqa: E731
            changed.append(f"{key} {short(a)} -> {short(b)}")
    return changed, moved


def provenance_warnings(original_tags: dict[str, str], now: dict[str, str], run_id: str) -> list[str]:
    """One line for the code (git commit, uncommitted changes), one for package versions."""
    out = []
    a, b = original_tags.get("git_commit"), now.get("git_commit")
    was_dirty, is_dirty = original_tags.get("git_dirty") == "true", now.get("git_dirty") == "true"
    edits = " (with uncommitted changes)"
    if a and b and a != b:
        out.append(f"git commit differs: run {run_id} ran at {a[:12]}{edits if was_dirty else ''}, "
                   f"this re-run is at {b[:12]}{edits if is_dirty else ''}")
    elif was_dirty and is_dirty:
        da, db = original_tags.get("git_diff_sha256"), now.get("git_diff_sha256")
        if not (da and da == db):
            out.append(f"uncommitted changes differ: run {run_id} and this re-run both ran at {str(a)[:12]} with "
                       "uncommitted changes, " + ("and they are not the same (git diff hash)" if da and db
                                                  else "and the run's were not recorded: the code may differ"))
    elif was_dirty:
        out.append(f"run {run_id} ran at {str(a)[:12]} with uncommitted changes; this re-run is the clean commit")
    elif is_dirty:
        out.append(f"this re-run has uncommitted changes on top of {str(b)[:12]}, the commit run {run_id} ran at")
    versions = [f"{k[len('version.'):]} {original_tags[k]} -> {now.get(k, 'absent')}"
                for k in sorted(original_tags) if k.startswith("version.") and original_tags[k] != now.get(k)]
    if versions:
        out.append(f"package versions differ from run {run_id}: {', '.join(versions)}")
    return out


def check_device(cfg: DictConfig) -> None:
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ReproduceError(f"the config trains on trainer.accelerator={cfg.trainer.accelerator} and this machine has "
                                 "no CUDA device: reproduce it on a machine with a GPU (a CPU re-run gives other numbers)")


def device_warnings(cfg: DictConfig, original_tags: dict[str, str], run_id: str) -> list[str]:
    """One line when the device or the torch thread count the run used differs from this re-run's."""
    from dropout_risk.tracking.provenance import device_tags

    now = device_tags(cfg)
    if cfg.trainer.num_threads > 0:
        now["torch_threads"] = str(cfg.trainer.num_threads)  # train() sets it before training
    diffs = [f"{key} {original_tags[key]} -> {now[key]}" for key in ("device", "torch_threads")
             if key in original_tags and original_tags[key] != now[key]]
    return [f"hardware differs from run {run_id}: {', '.join(diffs)}"] if diffs else []


def check_data(cfg: DictConfig, original, source: str, allow_change: bool) -> list[str]:
    """Fingerprint the data the re-run will use; compare with the original run's. Returns warnings."""
    from dropout_risk.data.loaders import load_data
    from dropout_risk.data.module import StudentDataModule

    d = cfg.data
    if d.kind in ("csv", "uci_dropout") and d.path and not Path(d.path).is_file():
        raise ReproduceError(f"data file {d.path} ({source}) does not exist: put it back, or pass "
                             "data_path=/where/it/is.csv (its sha256 is checked against the run's)")
    if original is None:
        return []
    recorded = parse_fingerprint(original.data.tags.get(TAG_DATA_FINGERPRINT))
    rid = original.info.run_id
    if recorded is None:
        return [f"run {rid} recorded no data fingerprint: the data cannot be checked"]
    now = StudentDataModule(load_data(d, cfg.seed), d, cfg.seed).fingerprint()
    changed, moved = data_changes(recorded, now)
    out = [f"data file moved since run {rid}: {'; '.join(moved)} (same content)"] if moved and not changed else []
    if changed:
        what = f"data {d.path}" if d.kind != "cohort" else f"cohort data (n_students={d.n_students}, seed={cfg.seed})"
        msg = f"{what} differs from what run {rid} trained on: {', '.join(changed)}"
        if not allow_change:
            raise ReproduceError(f"{msg}; refusing to re-run on different data: restore the data, or pass "
                                 "allow_data_change=true to re-run anyway")
        out.append(msg + " (allow_data_change=true: re-running anyway)")
    return out
