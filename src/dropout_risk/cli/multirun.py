"""Hydra's multirun (`train.py -m optim.lr=1e-3,1e-2`) as one group of runs.

A Hydra callback (conf/config.yaml, hydra.callbacks.multirun):
1. at the start, one parent MLflow run (`multirun-<time>`, tag multirun=parent);
2. each job's run nested under it, tagged `multirun_job` (Hydra's job number) and
   `multirun_overrides` (the job's overrides);
3. a job that fails (a bad value: one `error:` line) is recorded, as a FAILED nested run and in
   the parent's `multirun/jobs.csv`, and the remaining jobs still run (a divergence is an outcome,
   not a failure);
4. at the end, one line per job, the parent's tags (n_jobs, n_failed) and Hydra's multirun.yaml
   as its artifact, and exit code 1 when any job failed.
Only train.py's jobs are nested: a sweep.py job makes its own parent run (its trials under it).
"""

from __future__ import annotations

import atexit
import csv
import io
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

WIDTH = 100  # terminal lines: at most this many columns


@dataclass
class JobFailure:
    """What a job that failed returns to Hydra instead of raising (which would stop the multirun)."""

    error: str


@dataclass
class JobRecord:
    num: int
    overrides: list[str]
    status: str  # the run's outcome (converged, diverged, ...) or "failed"
    run_id: str | None = None
    detail: str = ""  # validation numbers, or the error line


@dataclass
class _State:
    parent: Any = None  # tracking.run.Run of the parent, when this multirun groups its jobs
    where: tuple = ()  # (tracking uri, experiment, artifact location) of the parent
    jobs: list[JobRecord] = field(default_factory=list)


_STATE = _State()


def _hydra_job() -> tuple[int, list[str]] | None:
    """(job number, overrides) when running as a job of a multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ValueError, ImportError):  # not under @hydra.main
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return int(hc.job.num), list(hc.overrides.task)


def in_multirun() -> bool:
    return _hydra_job() is not None


def job_tracking() -> dict[str, Any]:
    """train()'s keyword arguments that nest this job's run under the multirun's parent."""
    job = _hydra_job()
    if job is None or _STATE.parent is None:
        return {}
    num, overrides = job
    return {"parent_run_id": _STATE.parent.run_id,
            "tags": {"multirun_job": str(num), "multirun_overrides": " ".join(overrides)}}


def run_multirun_job(job: Callable[[], Any], user_errors: tuple[type[BaseException], ...]) -> Any:
    """Run one job of a multirun: a failure is printed (one `error:` line for a user error, the
    traceback for anything else) and returned as JobFailure, so that Hydra goes on to the next job
    (Hydra itself stops the whole multirun on an exception raised by a job)."""
    num, _ = _hydra_job() or (0, [])
    try:
        return job()
    except user_errors as exc:
        print(f"error: job {num}: {exc}", file=sys.stderr, flush=True)
        return JobFailure(str(exc))
    except Exception as exc:  # noqa: BLE001 - recorded; the other jobs run
        traceback.print_exc()
        return JobFailure(f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "))


def _detail(result: Any) -> str:
    metrics = getattr(result, "metrics", None) or {}
    parts = [f"val log loss {metrics['val/log_loss']:.4f}" if "val/log_loss" in metrics else "",
             f"ECE {metrics['val/ece']:.3f}" if "val/ece" in metrics else "",
             f"diverged at step {result.diverged_at_step}" if getattr(result, "diverged_at_step", None) else ""]
    return " · ".join(p for p in parts if p)


def _varying(jobs: list[JobRecord]) -> dict[int, str]:
    """Each job's overrides that differ between the jobs (what was swept), for its summary line."""
    common = set.intersection(*(set(j.overrides) for j in jobs)) if len(jobs) > 1 else set()
    return {j.num: " ".join(o for o in j.overrides if o not in common) or "(no overrides)" for j in jobs}


def _fit(line: str) -> str:
    return line if len(line) <= WIDTH else line[: WIDTH - 1] + "…"


def _close_if_open() -> None:
    """A multirun stopped before its end (Ctrl-C, a crash): its parent does not stay RUNNING."""
    parent = _STATE.parent
    if parent is not None and not parent.ended:
        parent.set_tags({"n_jobs": str(len(_STATE.jobs))})
        parent.end("KILLED")


class MultirunGroup(Callback):
    """Groups a train.py multirun under one parent MLflow run (module docstring)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        _STATE.parent, _STATE.jobs = None, []
        if "optim" not in config or config.get("sweep") is not None:  # not train.py: a sweep nests its own
            return
        from dropout_risk.errors import ConfigError
        from dropout_risk.tracking.run import Run

        t = config.tracking
        overrides = list(config.hydra.overrides.task)
        _STATE.where = (t.uri, t.experiment, t.artifact_location)
        try:
            _STATE.parent = Run.start(*_STATE.where,
                                      run_name=f"multirun-{time.strftime('%Y%m%d-%H%M%S')}",
                                      tags={"multirun": "parent", "multirun_overrides": " ".join(overrides)})
        except ConfigError as exc:  # e.g. the tracking store cannot be opened
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        atexit.register(_close_if_open)
        print(f"multirun: parent run {_STATE.parent.run_id}", flush=True)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:  # a single run: nothing to group
            return

        num, overrides = int(config.hydra.job.num), list(job_return.overrides or [])
        value = job_return.return_value if job_return.status == JobStatus.COMPLETED else job_return._return_value
        if isinstance(value, BaseException):
            value = JobFailure(f"{value.__class__.__name__}: {value}")
        if isinstance(value, JobFailure):
            record = JobRecord(num, overrides, "failed", self._failed_run(num, overrides, value.error), value.error)
        else:
            run_id = getattr(value, "run_id", None) or getattr(value, "parent_run_id", None)
            outcome = getattr(value, "outcome", None) or "finished"
            record = JobRecord(num, overrides, outcome, run_id, _detail(value))
        _STATE.jobs.append(record)

    def _failed_run(self, num: int, overrides: list[str], error: str) -> str | None:
        """A job that failed before its run started still shows in the UI, under the parent."""
        parent = _STATE.parent
        if parent is None:
            return None
        from dropout_risk.tracking.run import Run

        run = Run.start(*_STATE.where, run_name=f"job-{num}-failed",
                        tags={"multirun_job": str(num), "multirun_overrides": " ".join(overrides),
                              "outcome": "failed", "error": error[:5000]},
                        parent_run_id=parent.run_id)
        run.end("FAILED")
        return run.run_id

    def on_multirun_end(self, config, **kwargs) -> None:
        jobs, parent = _STATE.jobs, _STATE.parent
        failed = [j for j in jobs if j.status == "failed"]
        where = f" (parent run {parent.run_id})" if parent is not None else ""
        print(_fit(f"multirun: {len(jobs)} jobs, {len(failed)} failed{where}"))
        swept = _varying(jobs)
        width = max((len(swept[j.num]) for j in jobs), default=0)
        for j in jobs:
            print(_fit(f"  job {j.num}  {swept[j.num]:<{min(width, 40)}}  {j.status:<9}  {j.detail}".rstrip()))
        if parent is not None:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["job", "overrides", "status", "run_id", "detail"])
            for j in jobs:
                writer.writerow([j.num, " ".join(j.overrides), j.status, j.run_id or "", j.detail])
            parent.log_text(out.getvalue(), "multirun/jobs.csv")
            launched = Path(str(config.hydra.sweep.dir)) / "multirun.yaml"
            if launched.is_file():  # Hydra's record of the multirun as launched: re-run it with -m from it
                parent.log_file(launched, "multirun")
            parent.set_tags({"n_jobs": str(len(jobs)), "n_failed": str(len(failed))})
            parent.end("FINISHED")
        if failed:
            sys.exit(1)
