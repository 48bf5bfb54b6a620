"""Verifications started from the API: one at a time per process, bounded, off the request."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from audit import seals as sealing
from audit.verify import add_access_log, last, record, verify
from jiayi.settings import Settings

log = logging.getLogger("jiayi.audit")

#: The most events one verification started from the API walks.
MAX_EVENTS = 1_000_000


class Verifications:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None

    @property
    def running(self) -> bool:
        thread = self._running
        return thread is not None and thread.is_alive()

    def last(self) -> dict[str, Any] | None:
        store = sealing.open_store(self.settings)
        try:
            return last(store)
        finally:
            store.close()

    def start(self, requested_by: str, start: int, limit: int) -> bool:
        """Start verifying positions ``start + 1 .. start + limit``; False if one runs."""
        with self._lock:
            if self.running:
                return False
            self._running = threading.Thread(
                target=self._run,
                args=(requested_by, start, min(limit, MAX_EVENTS)),
                name="jiayi-verify",
                daemon=True,
            )
            self._running.start()
            return True

    def _run(self, requested_by: str, start: int, limit: int) -> None:
        started = datetime.now(UTC)
        elsewhere: list[sealing.Seal] = []
        path = sealing.seal_log_path(self.settings)
        try:
            if path.exists():
                elsewhere = sealing.read_log(path)
            try:
                public: Any = sealing.signing_key(self.settings).public_key()
            except sealing.NoSigningKey:
                public = None
            store = sealing.open_store(self.settings)
            try:
                report = verify(
                    store, start=start, stop=start + limit, elsewhere=elsewhere, public=public
                )
                if start == 0:
                    add_access_log(report, self.settings)
                record(store, report, requested_by, started)
            finally:
                store.close()
            log.info(
                "verification by %s: positions %d..%d, %d findings",
                requested_by,
                start + 1,
                report.end,
                len(report.findings),
            )
        except Exception:
            log.exception("the verification requested by %s failed", requested_by)

    def wait(self, timeout: float = 60.0) -> None:
        thread = self._running
        if thread is not None:
            thread.join(timeout)
