"""A patient's journey laid out for the page: one lane per organisation on a time axis.

Pure functions over what :class:`projections.queries.Queries` returns (patient, timeline
entries, referrals with their steps, overdue follow-ups); the template draws the result as SVG.
Positions are in the SVG's user units: the plot runs from ``PLOT_X0`` to ``PLOT_X1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from api.web.i18n import Labels

WIDTH = 1000
PLOT_X0, PLOT_X1 = 190.0, 985.0
AXIS_H, LANE_H = 28, 62


_PERIOD = re.compile(r"\((\d{4}-\d{2}-\d{2}) to (\d{4}-\d{2}-\d{2})\)")
_UNTIL = re.compile(r"until (\d{4}-\d{2}-\d{2})")


def moment(text: str | None) -> datetime | None:
    if not text:
        return None
    found = datetime.fromisoformat(text)
    return found if found.tzinfo else found.replace(tzinfo=UTC)


def day_start(d: date) -> datetime:
    return datetime.combine(d, time(0), tzinfo=UTC).astimezone()


def local(text: str | None) -> str:
    """A stored moment as local time, to the minute."""
    m = moment(text)
    return m.astimezone().strftime("%Y-%m-%d %H:%M") if m else ""


def duration(delta: timedelta, t: Labels) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 120:
        return f"{minutes} {t('unit_min')}"
    hours = minutes / 60
    if hours < 48:
        return f"{hours:.0f} {t('unit_h')}"
    return f"{hours / 24:.0f} {t('unit_d')}"


@dataclass
class Mark:
    x: float
    shape: str  # circle | diamond | square | triangle | dot
    cls: str
    title: str
    href: str


@dataclass
class Bar:
    x1: float
    x2: float
    cls: str
    title: str
    href: str
    label: str = ""


@dataclass
class Lane:
    org_id: str
    name: str
    kind: str  # center | hospital
    y: float = 0.0
    bars: list[Bar] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)


@dataclass
class Link:
    """A vertical connector between lanes (a referral up, a return down)."""

    x: float
    y1: float
    y2: float
    cls: str
    href: str


@dataclass
class Step:
    position: int
    at: str
    kind: str
    label: str
    summary: str
    who: str
    org: str
    waited: str


@dataclass
class Referral:
    id: str
    department: str
    hospital: str
    direction: str
    status: str
    urgency: str
    green: bool
    overdue: bool
    waiting: bool
    follow_up_due: str | None
    followed_up_on: str | None
    decision_wait: str
    steps: list[Step]


@dataclass
class Entry:
    position: int
    at: str
    recorded: str
    kind: str
    label: str
    summary: str
    who: str
    org: str
    referral_id: str | None
    lane: str


@dataclass
class Journey:
    height: int
    lanes: list[Lane]
    links: list[Link]
    ticks: list[tuple[float, str]]
    now_x: float
    referrals: list[Referral]
    entries: list[Entry]
    overdue: list[dict[str, Any]]
    #: The patient's open follow-up obligations (each with its ``overdue`` flag).
    obligations: list[dict[str, Any]]


class Axis:
    """Maps moments onto the plot between ``start`` and ``end``."""

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self.span = max((end - start).total_seconds(), 1.0)

    def x(self, m: datetime) -> float:
        f = (m - self.start).total_seconds() / self.span
        return round(PLOT_X0 + (PLOT_X1 - PLOT_X0) * min(1.0, max(0.0, f)), 1)

    def ticks(self) -> list[tuple[float, str]]:
        days = (self.end - self.start).days
        first = self.start.astimezone().date()
        out: list[tuple[float, str]] = []
        if days <= 16:
            step, fmt, d = 1, "%m-%d", first
            while day_start(d) <= self.end:
                out.append((self.x(day_start(d)), d.strftime(fmt)))
                d += timedelta(days=step * (2 if days > 9 else 1))
            return [t for t in out if t[0] > PLOT_X0]
        if days <= 120:
            d = first + timedelta(days=(7 - first.weekday()) % 7)
            while day_start(d) <= self.end:
                out.append((self.x(day_start(d)), d.strftime("%m-%d")))
                d += timedelta(days=7)
            return out
        months = 1 if days <= 500 else 3 if days <= 1500 else 12
        y, m = first.year, first.month
        while True:
            m += 1
            if m > 12:
                y, m = y + 1, m - 12
            if (m - 1) % months:
                continue
            d = date(y, m, 1)
            if day_start(d) > self.end:
                return out
            out.append((self.x(day_start(d)), d.strftime("%Y-%m")))


def build(
    patient: dict[str, Any],
    entries: list[dict[str, Any]],
    referrals: dict[str, dict[str, Any]],
    obligations: list[dict[str, Any]],
    now: datetime,
    t: Labels,
) -> Journey:
    """The journey of ``patient`` as it stood at ``now`` (the present, or an auditor's as-of).

    ``obligations``: the patient's open follow-up obligations as the views list them, each
    flagged ``overdue`` by the one definition (:mod:`projections.obligations`); a referral's
    follow-up is overdue when an obligation of its loop is."""
    overdue = [o for o in obligations if o.get("overdue")]
    late_loops = {o.get("source_id") for o in overdue}
    hospitals = {r["hospital_id"] for r in referrals.values() if r.get("hospital_id")}
    hospitals |= {e["hospital_id"] for e in entries if e.get("hospital_id")}
    names = {e["org_id"]: e["org_name"] for e in entries if e.get("org_id")}

    # --- lanes: the patient's center(s) first, then hospitals in order of first contact ---------
    home = patient.get("center_id") or ""
    lanes: dict[str, Lane] = {}

    def lane(org_id: str | None, kind: str | None = None) -> Lane:
        key = org_id or home
        if key not in hospitals and key not in lanes and kind != "center" and key != home:
            key = home  # an actor outside center and hospitals (setup, auditor) -> home lane
        if key not in lanes:
            kind = kind or ("hospital" if key in hospitals else "center")
            lanes[key] = Lane(key, names.get(key, "?"), kind)
        return lanes[key]

    lane(home, "center")
    for e in entries:
        if e.get("org_id") and e["org_id"] not in hospitals:
            lane(e["org_id"], "center")
    for e in entries:
        if e.get("org_id") in hospitals:
            lane(e["org_id"])
    for r in referrals.values():
        lane(r.get("hospital_id"))
        names.setdefault(r["hospital_id"], "?")

    # --- the time axis ------------------------------------------------------------------------
    contracts = _contracts(patient, entries, now)
    times = [m for e in entries if (m := moment(e["at"]))]
    times += [c[1] for c in contracts] + [c[2] for c in contracts if c[2] <= now]
    for r in referrals.values():
        if r.get("follow_up_due"):
            times.append(day_start(date.fromisoformat(r["follow_up_due"])))
    for o in overdue:
        times.append(day_start(date.fromisoformat(o["due"])))
    start = min([*times, now - timedelta(days=14)])
    end = max([*times, now])
    pad = (end - start) * 0.03 + timedelta(hours=12)
    axis = Axis(start - pad, end + pad)

    # --- contract periods ----------------------------------------------------------------------
    signed = {e["contract_id"]: e["position"] for e in entries if e["kind"] == "contract.signed"}
    for cid, begin, finish, ended in contracts:
        cls = "contract ended" if ended else "contract"
        if finish > axis.end:
            cls += " continues"
        lane(home, "center").bars.append(
            Bar(
                axis.x(begin),
                axis.x(finish),
                cls,
                f"{t('legend_contract')} {begin:%Y-%m-%d} – {finish:%Y-%m-%d}",
                f"#e-{signed.get(cid, '')}",
                t("contract"),
            )
        )

    # --- entries as marks ----------------------------------------------------------------------
    out_entries: list[Entry] = []
    by_referral: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        m = moment(e["at"])
        assert m is not None
        target = lane(e.get("org_id"))
        kind = e["kind"]
        category = kind.split(".")[0]
        if e.get("referral_id"):
            by_referral.setdefault(e["referral_id"], []).append(e)
        shape = {
            "follow_up": "diamond",
            "booking": "square",
            "referral": "circle",
            "return": "circle",
        }.get(category, "dot")
        who = e.get("staff_id") or ""
        title = f"{local(e['at'])} · {t.kind(kind)} · {who} @ {e.get('org_name') or '?'}"
        cls = f"k-{category} k-{kind.replace('.', '-')}"
        if e.get("referral_id") and referrals.get(e["referral_id"], {}).get("green_channel"):
            cls += " green"
        target.marks.append(Mark(axis.x(m), shape, cls, title, f"#e-{e['position']}"))
        out_entries.append(
            Entry(
                position=int(e["position"]),
                at=local(e["at"]),
                recorded=local(e.get("recorded_at")),
                kind=kind,
                label=t.kind(kind),
                summary=e.get("summary") or "",
                who=who,
                org=e.get("org_name") or "?",
                referral_id=e.get("referral_id"),
                lane=target.org_id,
            )
        )

    # --- referrals: a bar in the hospital's lane, links up and down ----------------------------
    ordered = sorted(lanes.values(), key=lambda la: (la.kind != "center", la.org_id != home))
    for i, la in enumerate(ordered):
        la.y = AXIS_H + i * LANE_H
    links: list[Link] = []
    cards: list[Referral] = []
    for rid, r in sorted(referrals.items(), key=lambda kv: _first(kv[1]) or ""):
        hospital = lane(r.get("hospital_id"))
        center = lanes.get(r.get("center_id") or "", lanes[home])
        card = _card(rid, r, names, now, rid in late_loops, t)
        cards.append(card)
        begin = moment(r.get("requested_at") or r.get("returned_at")) or now
        finish = (
            moment(r.get("acknowledged_at"))
            or moment(r.get("returned_at"))
            or _closing(r)
            or (now if r["status"] in ("requested", "accepted", "arrived", "admitted") else None)
            or begin
        )
        cls = "referral"
        if card.green:
            cls += " green"
        if card.overdue or card.waiting:
            cls += " overdue"
        if r["status"] in ("rejected", "cancelled"):
            cls += " closed"
        label = f"{r.get('department') or ''} · {t('status_' + r['status'])}"
        hospital.bars.append(Bar(axis.x(begin), axis.x(finish), cls, label, f"#r-{rid}", label))
        if r.get("requested_at"):
            links.append(Link(axis.x(begin), center.y, hospital.y, "up " + cls, f"#r-{rid}"))
        if r.get("returned_at"):
            links.append(
                Link(
                    axis.x(moment(r["returned_at"]) or now),
                    hospital.y,
                    center.y,
                    "down " + cls,
                    f"#r-{rid}",
                )
            )
        if r.get("follow_up_due"):
            due = day_start(date.fromisoformat(r["follow_up_due"]))
            state = "met" if r.get("followed_up_on") else "late" if card.overdue else "due"
            center.marks.append(
                Mark(
                    axis.x(due),
                    "triangle",
                    f"fu-due {state}",
                    f"{t('follow_up_due')} {r['follow_up_due']}"
                    + (f" · {t('overdue')}" if card.overdue else ""),
                    f"#r-{rid}",
                )
            )
    for o in overdue:
        due = day_start(date.fromisoformat(o["due"]))
        lanes[home].marks.append(
            Mark(
                axis.x(due),
                "triangle",
                "fu-due late",
                f"{t('overdue_follow_ups')}: {o.get('reason')} {o['due']}",
                "#overdue",
            )
        )
    height = AXIS_H + len(ordered) * LANE_H + 8
    return Journey(
        height=height,
        lanes=ordered,
        links=links,
        ticks=axis.ticks(),
        now_x=axis.x(now),
        referrals=cards,
        entries=list(reversed(out_entries)),
        overdue=overdue,
        obligations=obligations,
    )


def _first(r: dict[str, Any]) -> str | None:
    found: str | None = r.get("requested_at") or r.get("returned_at")
    return found


def _closing(r: dict[str, Any]) -> datetime | None:
    if r["status"] == "rejected":
        return moment(r.get("decided_at"))
    if r["status"] == "cancelled":
        steps = [s for s in r.get("steps", []) if s["kind"] == "referral.cancelled"]
        return moment(steps[-1]["at"]) if steps else None
    return None


def _card(
    rid: str, r: dict[str, Any], names: dict[str, str], now: datetime, overdue: bool, t: Labels
) -> Referral:
    steps: list[Step] = []
    previous: datetime | None = None
    for s in r.get("steps", []):
        at = moment(s["at"])
        assert at is not None
        steps.append(
            Step(
                position=len(steps) + 1,
                at=local(s["at"]),
                kind=s["kind"],
                label=t.kind(s["kind"]),
                summary=s.get("summary") or "",
                who=s.get("staff_id") or "",
                org=s.get("org_name") or "?",
                waited=duration(at - previous, t) if previous else "",
            )
        )
        previous = at
    requested, decided = moment(r.get("requested_at")), moment(r.get("decided_at"))
    due = r.get("follow_up_due")
    # a decision past its deadline by urgency (domain.referrals.decision_due; the referral's
    # decision_overdue is the one SQL definition the worklist and the KPI use too)
    waiting = bool(r["status"] == "requested" and r.get("decision_overdue"))
    decision_wait = ""
    if requested is not None:
        decision_wait = duration((decided or now) - requested, t)
    return Referral(
        id=rid,
        department=r.get("department") or "",
        hospital=names.get(r.get("hospital_id") or "", "?"),
        direction=r.get("direction") or "up",
        status=r["status"],
        urgency=r.get("urgency") or "routine",
        green=bool(r.get("green_channel")),
        overdue=overdue,
        waiting=waiting,
        follow_up_due=due,
        followed_up_on=r.get("followed_up_on"),
        decision_wait=decision_wait,
        steps=steps,
    )


def _contracts(
    patient: dict[str, Any], entries: list[dict[str, Any]], now: datetime
) -> list[tuple[str, datetime, datetime, bool]]:
    """(contract id, start, end, ended early) for every contract the timeline mentions."""
    current = patient.get("contract") or {}
    found: dict[str, list[Any]] = {}
    for e in entries:
        cid = e.get("contract_id")
        if not cid or not e["kind"].startswith("contract."):
            continue
        at = moment(e["at"])
        assert at is not None
        if e["kind"] == "contract.signed":
            period = _PERIOD.search(e.get("summary") or "")
            begin = day_start(date.fromisoformat(period.group(1))) if period else at
            finish = day_start(date.fromisoformat(period.group(2))) if period else at
            found[cid] = [begin, finish, False]
        elif cid in found and e["kind"] == "contract.renewed":
            until = _UNTIL.search(e.get("summary") or "")
            if until:
                found[cid][1] = day_start(date.fromisoformat(until.group(1)))
        elif cid in found and e["kind"] in ("contract.terminated", "contract.expired"):
            found[cid][1], found[cid][2] = (
                min(found[cid][1], at),
                e["kind"] == "contract.terminated",
            )
    if current.get("id") in found and current.get("end_date"):
        found[current["id"]][1] = day_start(date.fromisoformat(current["end_date"]))
    return [(cid, v[0], max(v[1], v[0]), v[2]) for cid, v in found.items()]
