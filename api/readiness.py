"""Whether the views still follow the log, for ``/ready``.

The views are *stalled* when they lack an event and have not moved for longer than a bound
(``JIAYI_VIEWS_MAX_LAG``). How long they have not followed is measured from the later of two
moments: when the first event they lack was recorded (read from the log, so it holds whichever
process runs the projections, and from the first look), and when this process last saw their
position move (so views working through a backlog are not called stalled). A runner stopped,
restarting for ever on a value it cannot write, or cut off from its store all read alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from projections.queries import Following


@dataclass(frozen=True)
class Stall:
    """The views lacking events for ``seconds`` (longer than the bound)."""

    position: int
    log_position: int
    seconds: float

    @property
    def behind(self) -> int:
        return self.log_position - self.position


class ViewsWatch:
    """Remembers the views' position at the last look and when this process saw it move."""

    def __init__(self, bound: float) -> None:
        self.bound = timedelta(seconds=bound)
        #: (position at the last look, when it was seen to move; None: not seen moving)
        self._seen: tuple[int, datetime | None] | None = None
        self._lock = threading.Lock()

    def stall(self, found: Following, now: datetime | None = None) -> Stall | None:
        """The stall ``found`` shows (None: the views follow the log)."""
        now = now or datetime.now(UTC)
        with self._lock:
            previous = self._seen
            moved = None
            if previous is not None:
                moved = now if previous[0] != found.position else previous[1]
            self._seen = (found.position, moved)
        if found.waiting_since is None or found.position >= found.log_position:
            return None
        since = found.waiting_since if moved is None else max(found.waiting_since, moved)
        waited = now - since
        if waited <= self.bound:
            return None
        return Stall(found.position, found.log_position, waited.total_seconds())
