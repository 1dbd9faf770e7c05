"""provenance_warnings: what a re-run says when its code or packages are not the original's:
one line for the code (git commit, uncommitted changes), one for package versions, each naming
the original run."""

from __future__ import annotations

import pytest

from dropout_risk.reproduce.checks import provenance_warnings

RUN = "0123456789abcdef0123456789abcdef"
A, B = "a1" * 20, "b2" * 20  # two 40-character commits
CLEAN = {"git_commit": A, "git_dirty": "false", "version.numpy": "2.1.0", "version.torch": "2.5.1"}


def _now(**changes: str) -> dict[str, str]:
    return {**CLEAN, **changes}


def test_same_code_and_packages_say_nothing():
    assert provenance_warnings(CLEAN, dict(CLEAN), RUN) == []
    dirty = _now(git_dirty="true", git_diff_sha256="d" * 64)
    assert provenance_warnings(dirty, dict(dirty), RUN) == []  # the same uncommitted changes


@pytest.mark.parametrize(
    "original, now, expected",
    [
        pytest.param(CLEAN, _now(git_commit=B),
                     f"git commit differs: run {RUN} ran at {A[:12]}, this re-run is at {B[:12]}", id="commit"),
        pytest.param(_now(git_dirty="true"), _now(git_commit=B, git_dirty="true"),
                     f"git commit differs: run {RUN} ran at {A[:12]} (with uncommitted changes), this re-run is at "
                     f"{B[:12]} (with uncommitted changes)", id="commit-both-dirty"),
        pytest.param(_now(git_dirty="true"), CLEAN,
                     f"run {RUN} ran at {A[:12]} with uncommitted changes; this re-run is the clean commit",
                     id="original-dirty"),
        pytest.param(CLEAN, _now(git_dirty="true"),
                     f"this re-run has uncommitted changes on top of {A[:12]}, the commit run {RUN} ran at",
                     id="rerun-dirty"),
        pytest.param(_now(git_dirty="true", git_diff_sha256="d" * 64), _now(git_dirty="true", git_diff_sha256="e" * 64),
                     f"uncommitted changes differ: run {RUN} and this re-run both ran at {A[:12]} with uncommitted "
                     "changes, and they are not the same (git diff hash)", id="both-dirty-other-diff"),
        pytest.param(_now(git_dirty="true"), _now(git_dirty="true", git_diff_sha256="e" * 64),
                     f"uncommitted changes differ: run {RUN} and this re-run both ran at {A[:12]} with uncommitted "
                     "changes, and the run's were not recorded: the code may differ", id="both-dirty-unrecorded"),
        pytest.param(CLEAN, _now(**{"version.numpy": "2.2.0"}),
                     f"package versions differ from run {RUN}: numpy 2.1.0 -> 2.2.0", id="version"),
        pytest.param(CLEAN, {k: v for k, v in CLEAN.items() if k != "version.torch"} | {"version.numpy": "1.0"},
                     f"package versions differ from run {RUN}: numpy 2.1.0 -> 1.0, torch 2.5.1 -> absent",
                     id="versions-two-one-line"),
    ],
)
def test_each_difference_is_one_line_naming_the_run(original, now, expected):
    assert provenance_warnings(original, now, RUN) == [expected]


def test_code_and_versions_both_differ_two_lines():
    warnings = provenance_warnings(_now(git_dirty="true"), _now(git_commit=B, **{"version.torch": "2.6.0"}), RUN)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("git commit differs") and warnings[1].startswith("package versions differ")
    assert all(RUN in w and "\n" not in w for w in warnings)


def test_a_run_without_git_tags_warns_of_nothing_it_cannot_know():
    # a run logged outside a git checkout: no commit to compare, and a clean re-run adds nothing
    assert provenance_warnings({"version.numpy": "2.1.0"}, CLEAN, RUN) == []
