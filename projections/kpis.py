"""KPI formulas, defined once (docs/kpis.md explains them in words).

Every rate is ``numerator / denominator`` and ``None`` when the denominator is 0. Inputs are
gathered from the views by ``projections/views.py`` for the chosen centers and period
``[start, end]`` (both days included).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from domain.common import InvalidValue


def ensure_period(start: date, end: date) -> None:
    """A period ``[start, end]`` holds at least one day: its last day is not before its first
    (an inverted period would answer every rate with nothing to count)."""
    if end < start:
        raise InvalidValue(
            f"the period's last day ({end}) is before its first ({start})", field="end"
        )


def rate(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the values <= it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass
class KpiInputs:
    #: Residents registered at the chosen centers (latest ``ResidentsRecorded`` with
    #: ``as_of <= end``, else the earliest recorded), total and key population.
    residents: int = 0
    residents_key: int = 0
    #: Patients of those centers with a contract in force on ``end``; of which key population
    #: (any key-population tag, or aged 65+ / 0-6 on ``end``).
    signed: int = 0
    signed_key: int = 0
    #: Follow-up obligations due in the period (not withdrawn), and of those completed.
    obligations_due: int = 0
    obligations_done: int = 0
    #: Hours from request to decision of upward referrals requested in the period and decided.
    turnaround_hours: list[float] = field(default_factory=list)
    #: Upward referrals requested in the period whose decision is due (taken, or its deadline
    #: passed by ``end`` or now, not cancelled before it); of those decided at or after their
    #: deadline or still undecided past it (``domain.referrals.decision_due``).
    decisions_due: int = 0
    decisions_overdue: int = 0
    #: Returns to community in the period whose follow-up is due by ``end``; of those with the
    #: follow-up done on or before its due date.
    returns_due: int = 0
    returns_closed: int = 0
    #: Slots of quotas reserved for the centers (or their district) with a session in the
    #: period, and the bookings on them that were not cancelled.
    quota_slots: int = 0
    quota_booked: int = 0
    #: Bookings made by the centers for sessions in the period with attendance recorded, and
    #: of those no-shows.
    attendance_recorded: int = 0
    no_shows: int = 0


def compute(i: KpiInputs) -> dict[str, Any]:
    """The KPI figures from their inputs (the only place the formulas live)."""
    return {
        "signing_rate": rate(i.signed, i.residents),
        "key_population_signing_rate": rate(i.signed_key, i.residents_key),
        "fulfilment_rate": rate(i.obligations_done, i.obligations_due),
        "referral_turnaround_hours": {
            "count": len(i.turnaround_hours),
            "median": percentile(i.turnaround_hours, 0.5),
            "p90": percentile(i.turnaround_hours, 0.9),
            "decisions_overdue": i.decisions_overdue,
            "decisions_overdue_rate": rate(i.decisions_overdue, i.decisions_due),
        },
        "loop_closure_rate": rate(i.returns_closed, i.returns_due),
        "quota_utilisation": rate(i.quota_booked, i.quota_slots),
        "no_show_rate": rate(i.no_shows, i.attendance_recorded),
        "inputs": {k: v for k, v in vars(i).items() if k != "turnaround_hours"},
    }
