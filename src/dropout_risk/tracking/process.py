"""Which process writes a run, and closing the runs whose process died.

Every run records the host, pid and (Linux) start time of the process that writes it
(`process_tags`). A process killed with SIGKILL (or a machine that lost power) cannot end its run,
so the next pipeline start that opens the store (tracking/store.py) closes as KILLED the RUNNING
runs of *this* host whose process is gone (`close_dead_runs`). The start time tells a pid the
kernel has since given to another process apart from the run's own process. Runs of other hosts,
of live processes, and runs without these tags (written by other tools or older versions) are
never touched.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from dropout_risk.tracking.names import TAG_ERROR, TAG_HOST, TAG_PID, TAG_PID_START


def start_ticks(pid: int) -> str | None:
    """When process `pid` started (clock ticks after boot, field 22 of /proc/<pid>/stat); None
    when it does not exist, is a zombie (dead, not yet reaped), or there is no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state is fields[0]
    if not fields or fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else None


def process_tags() -> dict[str, str]:
    """The tags that name this process: host, pid and (Linux) its start time."""
    tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    if (start := start_ticks(os.getpid())) is not None:
        tags[TAG_PID_START] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether the process `pid` (started at `start`, from `process_tags`) still runs on this host."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):  # Linux: a zombie is dead, a different start time is another process
        now = start_ticks(pid)
        return now is not None and (start is None or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def dead_run_error(pid: int | str, host: str) -> str:
    return f"process {pid} on {host} died; closed as KILLED by a later start"


def close_dead_runs(store, note: Callable[[str], None] | None = None) -> list[str]:
    """Close as KILLED the store's RUNNING runs written by a process of this host that is gone,
    tagged `error` (and `interrupted=true`, as a Ctrl-C'd run is); `note` gets one line naming them.
    Cost: one search of the experiments and one of the RUNNING runs of this host. Returns the ids."""
    from mlflow.entities import ViewType

    host = socket.gethostname()
    experiments = [e.experiment_id for e in store.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not experiments:
        return []
    running = store.search_runs(experiments, f"attributes.status = 'RUNNING' and tags.{TAG_HOST} = '{host}'",
                                run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)
    closed = []
    for run in running:
        tags = run.data.tags
        try:
            pid = int(tags.get(TAG_PID, ""))
        except ValueError:
            continue  # not written with our tags: leave it alone
        if process_alive(pid, tags.get(TAG_PID_START)):
            continue
        store.set_tag(run.info.run_id, TAG_ERROR, dead_run_error(pid, host))
        store.set_tag(run.info.run_id, "interrupted", "true")
        store.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    if closed and note is not None:
        note(f"note: closed {len(closed)} run(s) whose process died: {', '.join(closed)}")
    return closed
