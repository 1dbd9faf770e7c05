"""Optuna storage: journal file, SQLite or PostgreSQL, credentials kept out of URLs."""

from __future__ import annotations

from pathlib import Path

import optuna

from dropout_risk.errors import SweepError
from dropout_risk.sweep.retry import retry_failed_trial


def make_storage(url: str | None, heartbeat_s: int = 10) -> optuna.storages.BaseStorage:
    """An Optuna storage from a URL. None: the journal file under mlruns/ (several processes
    on one machine may share it; SQLite locks under parallel writers)."""
    journal = None
    if url is None:
        journal = "mlruns/optuna-journal.log"
    elif url.startswith("journal://"):
        journal = url[len("journal://"):]
    elif url.endswith((".log", ".journal")) and "://" not in url:
        journal = url
    if journal is not None:
        path = Path(journal).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme not in ("sqlite", "postgresql", "mysql"):
        raise SweepError(f"sweep.storage={url!r}: unknown storage scheme {scheme!r}; use a journal file "
                         "(path ending in .log), sqlite:///file.db or postgresql://user@host/db")
    engine_kwargs = {} if scheme == "sqlite" else {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    heartbeat = {} if scheme == "sqlite" else {
        "heartbeat_interval": heartbeat_s, "grace_period": 3 * heartbeat_s,
        "heartbeat_stale_trial_callback": retry_failed_trial}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
    except Exception as exc:  # noqa: BLE001 - any connection failure becomes one line
        reason = str(exc).strip().splitlines()[0][:300]
        raise SweepError(f"sweep.storage: cannot open {redact(url)}: {reason}") from None


def has_password(url: str) -> bool:
    if "://" not in url or "@" not in url:
        return False
    creds = url.split("://", 1)[1].rsplit("@", 1)[0]
    return ":" in creds


def redact(url: str) -> str:
    """Never print a password that came in a URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url
    return url


