"""Team workload as chart rows for the page: follow-ups due/overdue/done, contracts by key
population, for the team and for each member (bars scaled to the largest value)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.web.i18n import Labels

FOLLOW_UPS = (
    ("follow_ups_due_7_days", "due"),
    ("follow_ups_overdue", "overdue_short"),
    ("follow_ups_completed_this_month", "done_short"),
)


@dataclass
class Segment:
    key: str
    label: str
    value: int
    percent: float


@dataclass
class Row:
    name: str
    segments: list[Segment]

    @property
    def total(self) -> int:
        return sum(s.value for s in self.segments)


@dataclass
class Charts:
    follow_ups: list[Row]
    contracts: list[Row]


def _scale(rows: list[Row], stacked: bool) -> list[Row]:
    top = max(
        [r.total if stacked else max((s.value for s in r.segments), default=0) for r in rows] + [1]
    )
    for r in rows:
        for s in r.segments:
            s.percent = round(85.0 * s.value / top, 1)  # room for the figure
    return rows


def workload_charts(w: dict[str, Any], t: Labels) -> Charts:
    """Rows for the team (first) and each member. Team-wide follow-up figures (due, overdue)
    are not attributed to members; completed ones are, to whoever recorded the visit."""
    people: list[tuple[str, dict[str, Any]]] = [(t("team"), w)]
    for m in w.get("members", []):
        people.append((f"{m.get('name') or m.get('staff_id')}", m))
    follow_ups = [
        Row(name, [Segment(k, t(label), int(src.get(k) or 0), 0.0) for k, label in FOLLOW_UPS])
        for name, src in people
    ]
    contracts = []
    for name, src in people:
        key = int(src.get("key_population_contracts") or 0)
        other = int(src.get("active_contracts") or 0) - key
        contracts.append(
            Row(
                name,
                [
                    Segment("key", t("key_population"), key, 0.0),
                    Segment("other", t("others"), max(other, 0), 0.0),
                ],
            )
        )
    return Charts(_scale(follow_ups, stacked=False), _scale(contracts, stacked=True))
