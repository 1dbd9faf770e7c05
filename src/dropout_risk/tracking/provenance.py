"""Where a result came from: code (git), packages, device, data fingerprint, weights hash."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch
from omegaconf import DictConfig

from dropout_risk.config.paths import PROJECT_ROOT
from dropout_risk.tracking.names import TAG_DATA_FINGERPRINT


def data_provenance_tags(fingerprint: dict) -> dict[str, str]:
    """`data_fingerprint` (JSON: sha256 of the file bytes, or generator version + parameters,
    plus the split) and its parts as separate tags, searchable in the UI."""
    tags = {TAG_DATA_FINGERPRINT: json.dumps(fingerprint, sort_keys=True, default=str),
            "split_fingerprint": str(fingerprint.get("split", ""))}
    if "sha256" in fingerprint:
        tags["data_sha256"] = str(fingerprint["sha256"])
    if "generator" in fingerprint:
        tags["data_generator"] = str(fingerprint["generator"])
    return tags


def device_tags(cfg: DictConfig) -> dict[str, str]:
    """Where the numbers were computed: results are bit-identical only on the same kind of device
    (and, for matrix products that split their sums, the same thread count)."""
    device = "cpu"
    if cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        device = f"cuda:{torch.cuda.get_device_name(0)}"
    return {"device": device, "torch_threads": str(torch.get_num_threads())}


def weights_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


PACKAGES = ("torch", "lightning", "mlflow", "optuna", "numpy", "pandas", "scikit-learn", "hydra-core")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def git_state(root: Path = PROJECT_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the code being run; ('unknown', None) outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
        return commit, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def git_diff_hash(root: Path = PROJECT_ROOT) -> str | None:
    """sha256 of `git diff HEAD` (tracked files): tells two dirty trees at one commit apart."""
    try:
        diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--no-ext-diff", "--binary"],
                              capture_output=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    import hashlib

    return hashlib.sha256(diff).hexdigest()


def provenance_tags() -> dict[str, str]:
    """git commit/dirty/diff hash, the command and package versions, as run tags. Read once per
    process (two or three git calls, ~10 ms: a sweep worker's trials would repeat them): the
    code a process runs is the code it loaded."""
    return dict(_provenance())


@functools.cache
def _provenance() -> dict[str, str]:
    commit, dirty = git_state()
    tags = {"git_commit": commit, "git_dirty": str(dirty).lower(), "command": shlex.join(sys.argv)[:5000]}
    if dirty and (diff := git_diff_hash()):
        tags["git_diff_sha256"] = diff
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    tags.update(standard_tags(commit))
    return tags


def standard_tags(commit: str) -> dict[str, str]:
    """MLflow's own source tags (the UI's Source and User columns): the script this process runs
    (relative to the project when it is inside it), LOCAL, the git commit (when known), the user."""
    import getpass

    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    try:
        source = str(script.resolve().relative_to(PROJECT_ROOT))
    except (ValueError, OSError):
        source = script.name or "python"
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = "unknown"
    tags = {"mlflow.source.name": source, "mlflow.source.type": "LOCAL", "mlflow.user": user}
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit
    return tags
