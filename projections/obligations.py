"""The domain's one definition of an overdue (and an on-time) follow-up, as SQL.

:func:`domain.followups.overdue` and :func:`~domain.followups.on_time` say it in Python (the
reference the tests hold these to); these predicates say the same over a row
of ``v_obligations`` (``status``, ``due``, ``done_on``: ISO days, compared as text), and every
query that counts or lists such follow-ups (team workloads, center worklists, KPIs, a patient's
open obligations and so the journey page) uses them, never a condition of its own.
"""

from __future__ import annotations


def overdue(alias: str = "o") -> str:
    """Open and due before the day given as the one parameter (``today``, ISO)."""
    return f"({alias}.status = 'open' AND {alias}.due < ?)"


def on_time(alias: str = "o") -> str:
    """Fulfilled by a visit on or before the due date (no parameter)."""
    return f"({alias}.status = 'done' AND {alias}.done_on <= {alias}.due)"
