"""``ViewQueries``: the :class:`projections.queries.Queries` interface, read from the views.

Ids go in as ``UUID`` and come out as ``str``; the views store them as hex. What a reader may
see is decided in one place, :mod:`projections.scope`, from care relationships
(:mod:`projections.relations`): every query here restricts its rows with its fragments.
Every query taking a ``Scope`` declares what it reads (:func:`audit.access.reads`): the rows
it returns about each patient are recorded in the read access log against the scope's reader.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, TypeVar
from uuid import UUID

from audit import access
from audit.access import AccessLog, reads
from domain.common import add_years
from domain.followups import LOOP_REASONS
from domain.patients import derived_key_populations
from eventstore.errors import DamagedEvent
from eventstore.keys import KEYS
from eventstore.personal import reveal
from projections import kpis as formulas
from projections import obligations as owed
from projections.events import LogReader, moment_text
from projections.location import Location
from projections.queries import Following, Page, Scope
from projections.replays import Budget, Builder, Replays, in_process
from projections.runner import select
from projections.scope import Access
from projections.store import ViewStore

ID_COLUMNS = {
    "id", "patient_id", "center_id", "team_id", "hospital_id", "contract_id", "referral_id",
    "booking_id", "quota_id", "org_id", "source_id", "obligation_id", "reserved_center",
}  # fmt: skip


log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: Search by name needs at least this many characters (an id or national id is exact).
MIN_NAME_TERM = 2

#: What a timeline entry shows (the same columns, in order, as :data:`RELATION_ENTRIES`).
TIMELINE_COLUMNS = (
    "t.at, t.recorded_at, t.kind, t.summary, t.org_id, t.org_name, t.staff_id, t.contract_id, "
    "t.referral_id, t.booking_id, t.hospital_id, t.position, t.patient_id"
)

#: When each care relationship of a patient started and ended, as timeline entries (for
#: auditors); two parameters: the patient, twice.
RELATION_ENTRIES = (
    "SELECT rel.started_at AS at, rel.started_recorded_at AS recorded_at, "
    "'access.' || rel.kind || '_started' AS kind, ro.name || ': ' || rel.kind AS summary, "
    "rel.org_id, ro.name AS org_name, NULL AS staff_id, NULL AS contract_id, "
    "NULL AS referral_id, NULL AS booking_id, NULL AS hospital_id, "
    "rel.started_position AS position, rel.patient_id "
    "FROM v_relations rel LEFT JOIN v_orgs ro ON ro.id = rel.org_id WHERE rel.patient_id = ? "
    "UNION ALL "
    "SELECT rel.ended_at, rel.ended_recorded_at, 'access.' || rel.kind || '_ended', "
    "ro.name || ': ' || rel.kind, rel.org_id, ro.name, NULL, NULL, NULL, NULL, NULL, "
    "rel.ended_position, rel.patient_id "
    "FROM v_relations rel LEFT JOIN v_orgs ro ON ro.id = rel.org_id "
    "WHERE rel.patient_id = ? AND rel.ended_at IS NOT NULL"
)


def like_literal(text: str) -> str:
    """``text`` for ``LIKE ... ESCAPE '!'``: its ``%``, ``_`` and ``!`` match themselves."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _out(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        k: (str(UUID(hex=v)) if k in ID_COLUMNS and isinstance(v, str) and len(v) == 32 else v)
        for k, v in row.items()
    }


def _outs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in map(_out, rows) if r is not None]


def _forms(row: dict[str, Any]) -> None:
    """A referral row's forms (JSON in the view) as mappings: ``transfer_form`` (转出单) and
    ``return_form`` (回转单, once returned); None where there is none yet."""
    for name in ("transfer_form", "return_form"):
        if name in row:
            text = row[name]
            row[name] = json.loads(text) if isinstance(text, str) and text else None


#: A decision is overdue when it was taken at or after its deadline, or is still to be taken
#: when the deadline has passed (``?``: the moment looked at); the one definition the hospital
#: worklist, the referral and the KPIs use (``decision_due`` from ``domain.referrals``).
OVERDUE_DECISION = (
    "({r}.decision_due IS NOT NULL AND ({r}.decided_at >= {r}.decision_due OR "
    "({r}.decided_at IS NULL AND {r}.decision_due <= ? AND "
    "({r}.cancelled_at IS NULL OR {r}.cancelled_at >= {r}.decision_due))))"
)


def placeholders(values: list[Any]) -> str:
    """``?, ?, ?``: one SQL parameter mark per value (``NULL`` for none, so ``IN (NULL)``
    matches nothing)."""
    return ", ".join("?" for _ in values) or "NULL"


def replayed(method: F) -> F:
    """Declares a query method taking ``as_of``: given a moment, the call holds that moment's
    replay (built first when needed, :meth:`Replays.use`) and ``_db(as_of)`` is it."""
    signature = inspect.signature(method)

    @functools.wraps(method)
    def held(self: ViewQueries, *args: Any, **kwargs: Any) -> Any:
        as_of = signature.bind(self, *args, **kwargs).arguments.get("as_of")
        if as_of is None:
            return method(self, *args, **kwargs)
        with self.replays.use(moment_text(as_of)) as store:
            outer = getattr(self._held, "store", None)
            self._held.store = store
            try:
                return method(self, *args, **kwargs)
            finally:
                self._held.store = outer

    held.__replayed__ = True  # type: ignore[attr-defined]
    return held  # type: ignore[return-value]


class ViewQueries:
    """Reads the live views, or views replayed as of a moment (:mod:`projections.replays`:
    built on first use by ``builder``, shared with other processes, kept within ``budget``).

    A query taking ``as_of`` is declared :func:`replayed`: for its duration it holds the
    moment's store, which no process deletes meanwhile; up to ``keep_replays`` stores'
    connections stay open for the next query.

    With an ``access_log``, every read of a patient's data is recorded there (queued; its
    writer thread writes it); :meth:`close` writes what is still queued.
    """

    def __init__(
        self,
        location: Location,
        reader: LogReader,
        timezone: tzinfo = UTC,
        keep_replays: int = 8,
        access_log: AccessLog | None = None,
        budget: Budget | None = None,
        builder: Builder | None = None,
    ) -> None:
        self.location = location
        self.access_log = access_log
        self.reader = reader
        #: "Today" for lists that take none is a day of this zone (the deployment's).
        self.timezone = timezone
        #: The current moment: what "today" is in this zone (tests move it).
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.store = location.open()
        self.replays = Replays(
            location, builder or in_process(reader), budget or Budget(), keep_open=keep_replays
        )
        self._held = threading.local()

    def reveal(self, found: Any) -> Any:
        """``found`` with its tokens opened (personal data is stored encrypted per patient,
        in events and views alike); erased patients' read ``[erased]``."""
        keyring = self.reader.keyring
        return found if keyring is None else reveal(keyring, found)

    def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        self.store.close()
        self.replays.close()

    # --- positions ----------------------------------------------------------------------

    def flush(self) -> None:
        if self.access_log is not None:
            self.access_log.flush()

    def position(self) -> int:
        names = [p.name for p in select()]
        try:
            found = self.store.positions()
        except Exception:
            return 0
        return min((found.get(n, 0) for n in names), default=0)

    def log_position(self) -> int:
        return self.reader.max_position()

    def following(self) -> Following:
        """The views' position, the log's, and when the first event the views lack was
        recorded (or the damaged event they stopped before). One row of the log read."""
        position = self.position()
        log_position = self.log_position()
        try:
            lacking = self.reader.decode(self.reader.page(position, 1))
        except DamagedEvent as exc:
            return Following(position, log_position, damaged=exc)
        since = datetime.fromisoformat(lacking[0].timestamp) if lacking else None
        return Following(position, log_position, waiting_since=since)

    def wait_for(self, position: int, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.position() < position:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _db(self, as_of: datetime | None) -> ViewStore:
        """The live views, or the replay the running :func:`replayed` query holds."""
        if as_of is None:
            return self.store
        held: ViewStore | None = getattr(self._held, "store", None)
        if held is None:
            raise RuntimeError("a query reading views as of a moment must be @replayed")
        return held

    # --- patients -----------------------------------------------------------------------

    @reads("registry", subject="patient_id", key="id")
    @replayed
    def patient(
        self, scope: Scope, patient_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        db = self._db(as_of)
        visible, params = Access(scope).registry("p.id")
        p = db.one(
            f"SELECT * FROM v_patients p WHERE p.id = ? AND {visible}", [patient_id.hex, *params]
        )
        if p is None:
            return None
        self._key_populations(p, as_of)
        p["moved_away"] = bool(p["moved_away"])
        del p["national_id_index"]  # a keyed hash: for finding, never for showing
        p["erased"] = p.pop("erased_at") is not None
        contract = None
        if p["contract_id"]:
            contract = _out(
                db.one(
                    "SELECT c.*, t.name AS team_name FROM v_contracts c "
                    "LEFT JOIN v_teams t ON t.id = c.team_id WHERE c.id = ?",
                    (p["contract_id"],),
                )
            )
        out = _out(p)
        assert out is not None
        out["contract"] = contract
        return out

    def _key_populations(self, p: dict[str, Any], as_of: datetime | None) -> None:
        """The patient's key populations: ``tags`` as recorded, ``derived_tags`` from the birth
        date on the deployment's day (or the as-of moment's day): nothing records those, they
        change with the calendar; ``key_populations`` both together."""
        recorded = p["tags"].split(",") if p["tags"] else []
        day = (as_of or self.clock()).astimezone(self.timezone).date()
        try:
            born: date | None = date.fromisoformat(str(self.reveal(p["birth_date"])))
        except ValueError:  # erased
            born = None
        derived = sorted(derived_key_populations(born, day))
        p["tags"] = recorded
        p["derived_tags"] = derived
        p["key_populations"] = sorted({*recorded, *derived})

    @reads("search", key="id")
    def search_patients(self, scope: Scope, text: str, page: Page) -> list[dict[str, Any]]:
        """Patients by an exact id or national id, or by at least two characters of the name
        (taken literally), within the caller's registry scope; erased patients are found by
        nothing.

        Names are stored encrypted per patient, so a name is matched in memory: the names
        the caller may see are opened (their keys loaded in one query) and compared. A
        national id is found by its blind index (a keyed hash, ``national_id_index``)."""
        text = text.strip()
        try:
            exact_id = UUID(text).hex
        except ValueError:
            exact_id = ""
        by_name = len(text) >= MIN_NAME_TERM
        if not by_name and not exact_id:
            return []
        visible, params = Access(scope).registry("p.id")
        columns = "p.id, p.name, p.sex, p.birth_date, p.district, p.center_id, p.contract_id"
        by_number, number_params = self._found_by(text)
        exact = self.store.rows(
            f"SELECT {columns} FROM v_patients p WHERE (p.id = ? OR {by_number}) "
            f"AND p.erased_at IS NULL AND {visible}",
            [exact_id, *number_params, *params],
        )
        found = {r["id"]: r for r in exact}
        if by_name:
            named = self.store.rows(
                f"SELECT p.id, p.name FROM v_patients p WHERE p.erased_at IS NULL "
                f"AND p.name IS NOT NULL AND {visible}",
                params,
            )
            names = self.reveal([r["name"] for r in named])
            hits = [r["id"] for r, name in zip(named, names, strict=True) if text in name]
            hits = [h for h in hits if h not in found]
            for start in range(0, len(hits), 500):
                chunk = hits[start : start + 500]
                marks = ", ".join("?" for _ in chunk)
                for r in self.store.rows(
                    f"SELECT {columns} FROM v_patients p WHERE p.id IN ({marks})", chunk
                ):
                    found[r["id"]] = r
        rows = list(found.values())
        names = self.reveal([r["name"] for r in rows])
        ordered = [
            r for _, r in sorted(zip(names, rows, strict=True), key=lambda x: (x[0], x[1]["id"]))
        ]
        return _outs(ordered[page.offset : page.offset + page.limit])

    @reads("timeline", subject="patient_id")
    @replayed
    def timeline(
        self,
        scope: Scope,
        patient_id: UUID,
        since: datetime | None = None,
        until: datetime | None = None,
        kinds: list[str] | None = None,
        page: Page = Page(),
        as_of: datetime | None = None,
    ) -> list[dict[str, Any]] | None:
        db = self._db(as_of)
        access = Access(scope)
        related, params = access.related("p.id")
        if (
            db.one(
                f"SELECT 1 AS x FROM v_patients p WHERE p.id = ? AND {related}",
                [patient_id.hex, *params],
            )
            is None
        ):
            return None
        entries = f"SELECT {TIMELINE_COLUMNS} FROM v_timeline t"
        visible, visible_params = access.timeline("t")
        where, args = [f"t.patient_id = ? AND {visible}"], [patient_id.hex, *visible_params]
        if scope.everything:
            # auditors also see when each care relationship started and ended
            entries = f"SELECT * FROM ({entries} UNION ALL {RELATION_ENTRIES}) t"
            args = [patient_id.hex, patient_id.hex, *args]
        if since is not None:
            where.append("t.at >= ?")
            args.append(moment_text(since))
        if until is not None:
            where.append("t.at <= ?")
            args.append(moment_text(until))
        if kinds:
            where.append("(" + " OR ".join("t.kind = ? OR t.kind LIKE ?" for _ in kinds) + ")")
            for k in kinds:
                args += [k, f"{k}.%"]
        rows = db.rows(
            f"{entries} WHERE {' AND '.join(where)} ORDER BY t.at, t.position LIMIT ? OFFSET ?",
            [*args, page.limit, page.offset],
        )
        return _outs(rows)

    @reads("obligations", subject="patient_id")
    @replayed
    def open_obligations(
        self, scope: Scope, patient_id: UUID, today: date, as_of: datetime | None = None
    ) -> list[dict[str, Any]] | None:
        """The patient's open follow-up obligations, earliest due first, each with
        ``overdue`` on ``today`` (the one definition, :mod:`projections.obligations`). Read as
        the patient's timeline is: a patient the reader has no relation with is absent; a
        hospital sees only the obligations of its own referral's loop."""
        db = self._db(as_of)
        access = Access(scope)
        related, params = access.related("p.id")
        if (
            db.one(
                f"SELECT 1 AS x FROM v_patients p WHERE p.id = ? AND {related}",
                [patient_id.hex, *params],
            )
            is None
        ):
            return None
        visible, visible_params = access.obligation("o")
        rows = db.rows(
            "SELECT o.id, o.reason, o.source_id, o.window_start, o.due, o.patient_id, "
            "o.face_to_face, o.risk_assessment, "
            f"CASE WHEN {owed.overdue('o')} THEN 1 ELSE 0 END AS overdue "
            f"FROM v_obligations o WHERE o.patient_id = ? AND o.status = 'open' AND {visible} "
            "ORDER BY o.due, o.id",
            [today.isoformat(), patient_id.hex, *visible_params],
        )
        for r in rows:
            for flag in ("overdue", "face_to_face", "risk_assessment"):
                r[flag] = bool(r[flag])
            # a referral's loop, or a contract's (the domain's one list of loop reasons)
            r["source"] = "referral" if r["reason"] in LOOP_REASONS else "contract"
        return _outs(rows)

    # --- referrals and quotas -----------------------------------------------------------

    @reads("referral")
    @replayed
    def referral(
        self, scope: Scope, referral_id: UUID, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        db = self._db(as_of)
        visible, params = Access(scope).referral("r")
        now = moment_text(as_of or self.clock())
        r = db.one(
            f"SELECT r.*, CASE WHEN {OVERDUE_DECISION.format(r='r')} THEN 1 ELSE 0 END "
            "AS decision_overdue, (SELECT name FROM v_orgs WHERE id = r.center_id) AS center_name, "
            "(SELECT name FROM v_orgs WHERE id = r.hospital_id) AS hospital_name "
            f"FROM v_referrals r WHERE r.id = ? AND {visible}",
            [now, referral_id.hex, *params],
        )
        if r is None:
            return None
        r["green_channel"] = bool(r["green_channel"])
        r["decision_overdue"] = bool(r["decision_overdue"])
        r.pop("cancelled_at", None)
        _forms(r)
        steps = db.rows(
            "SELECT at, kind, summary, org_id, org_name, staff_id FROM v_timeline "
            "WHERE referral_id = ? ORDER BY at, position",
            (referral_id.hex,),
        )
        out = _out(r)
        assert out is not None
        out["steps"] = _outs(steps)
        return out

    _QUOTA = "SELECT q.*, q.slots - q.booked AS slots_left FROM v_quotas q"

    @reads("quota")
    def quota(self, scope: Scope, quota_id: UUID) -> dict[str, Any] | None:
        access = Access(scope)
        visible, params = access.quota("q")
        q = self.store.one(f"{self._QUOTA} WHERE q.id = ? AND {visible}", [quota_id.hex, *params])
        if q is None:
            return None
        q["released"] = bool(q["released"])
        mine, mine_params = access.booking("b")
        bookings = self.store.rows(
            "SELECT b.id, b.patient_id, b.referral_id, b.team_id, b.center_id, b.staff_id, "
            f"b.booked_at, b.status FROM v_bookings b WHERE b.quota_id = ? AND {mine} "
            "ORDER BY b.booked_at, b.id",
            [quota_id.hex, *mine_params],
        )
        out = _out(q)
        assert out is not None
        # the counts are the quota's; the details only of the bookings the reader may see
        out["bookings"] = _outs(bookings)
        return out

    @reads(None)  # slots and release times: no patient
    def open_quotas(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        now = moment_text(self.clock())
        visible, params = Access(scope).quota("q")
        rows = self.store.rows(
            f"{self._QUOTA} WHERE q.released = 0 AND q.slots > q.booked AND q.release_at > ? "
            f"AND {visible} ORDER BY q.release_at, q.id LIMIT ? OFFSET ?",
            [now, *params, page.limit, page.offset],
        )
        return _outs(rows)

    # --- teams --------------------------------------------------------------------------

    def _team(self, db: ViewStore, scope: Scope, team_hex: str) -> dict[str, Any] | None:
        visible, params = Access(scope).team("t")
        return db.one(f"SELECT * FROM v_teams t WHERE t.id = ? AND {visible}", [team_hex, *params])

    @reads(None)  # counts per team and member: no patient
    @replayed
    def team_workload(
        self, scope: Scope, team_id: UUID, today: date, as_of: datetime | None = None
    ) -> dict[str, Any] | None:
        db = self._db(as_of)
        team = self._team(db, scope, team_id.hex)
        if team is None:
            return None
        return self._workload(db, team, today)

    def _workload(self, db: ViewStore, team: dict[str, Any], today: date) -> dict[str, Any]:
        tid = team["id"]
        d = today.isoformat()
        week = (today + timedelta(days=7)).isoformat()
        month = today.replace(day=1).isoformat()
        old, young = add_years(today, -65).isoformat(), add_years(today, -7).isoformat()
        per: dict[str, dict[str, int]] = {}

        def count(metric: str, sql: str, params: tuple[Any, ...], key: str | None = None) -> int:
            total = 0
            for r in db.rows(sql, params):
                n = int(r["n"] or 0)
                total += n
                who = r.get("who")
                if who is not None:
                    per.setdefault(who, {}).setdefault(metric, 0)
                    per[who][metric] += n
            return total

        key_sql = "CASE WHEN p.tags <> '' OR p.born <= ? OR p.born > ? THEN 1 ELSE 0 END"
        contracts = db.rows(
            f"SELECT c.signed_by AS who, COUNT(*) AS n, SUM({key_sql}) AS k FROM v_contracts c "
            "JOIN v_care_patients p ON p.id = c.patient_id WHERE c.team_id = ? "
            "AND c.status = 'active' AND c.start_date <= ? AND c.end_date >= ? GROUP BY c.signed_by",
            (old, young, tid, d, d),
        )
        for r in contracts:
            mine = per.setdefault(r["who"], {})
            mine["active_contracts"] = int(r["n"])
            mine["key_population_contracts"] = int(r["k"] or 0)
        totals = {
            "active_contracts": sum(int(r["n"]) for r in contracts),
            "key_population_contracts": sum(int(r["k"] or 0) for r in contracts),
            "referrals_sent_this_month": count(
                "referrals_sent_this_month",
                "SELECT requested_by AS who, COUNT(*) AS n FROM v_referrals WHERE team_id = ? "
                "AND direction = 'up' AND requested_at >= ? GROUP BY requested_by",
                (tid, month),
            ),
            "referrals_awaiting_decision": count(
                "referrals_awaiting_decision",
                "SELECT requested_by AS who, COUNT(*) AS n FROM v_referrals WHERE team_id = ? "
                "AND status = 'requested' GROUP BY requested_by",
                (tid,),
            ),
            "returns_awaiting_acknowledgement": count(
                "returns_awaiting_acknowledgement",
                "SELECT COUNT(*) AS n FROM v_referrals WHERE team_id = ? AND status = 'returned'",
                (tid,),
            ),
            "follow_ups_due_7_days": count(
                "follow_ups_due_7_days",
                "SELECT COUNT(*) AS n FROM v_obligations o JOIN v_care_patients p "
                "ON p.id = o.patient_id WHERE p.team_id = ? AND o.status = 'open' "
                "AND o.due >= ? AND o.due <= ?",
                (tid, d, week),
            ),
            "follow_ups_overdue": count(
                "follow_ups_overdue",
                "SELECT COUNT(*) AS n FROM v_obligations o JOIN v_care_patients p "
                f"ON p.id = o.patient_id WHERE p.team_id = ? AND {owed.overdue('o')}",
                (tid, d),
            ),
            "bookings_next_7_days": count(
                "bookings_next_7_days",
                "SELECT staff_id AS who, COUNT(*) AS n FROM v_bookings WHERE team_id = ? "
                "AND status = 'booked' AND session_date >= ? AND session_date < ? GROUP BY staff_id",
                (tid, d, week),
            ),
            "follow_ups_completed_this_month": count(
                "follow_ups_completed_this_month",
                "SELECT staff_id AS who, COUNT(*) AS n FROM v_visits WHERE team_id = ? "
                "AND obligation_id IS NOT NULL AND on_date >= ? AND on_date <= ? GROUP BY staff_id",
                (tid, month, d),
            ),
        }
        members = db.rows(
            "SELECT staff_id, name, role, org_id, active FROM v_members WHERE team_id = ? "
            "ORDER BY staff_id",
            (tid,),
        )
        out_members = []
        for m in members:
            figures = per.pop(m["staff_id"], {})
            if m["active"] or figures:
                out_members.append({**_out(m), "active": bool(m["active"]), **figures})  # type: ignore[dict-item]
        out = _out(team)
        assert out is not None
        return {**out, "today": d, **totals, "members": out_members, "others": per}

    @reads(None)  # counts per team: no patient
    def teams(self, scope: Scope, page: Page) -> list[dict[str, Any]]:
        visible, params = Access(scope).team("t")
        teams = self.store.rows(
            f"SELECT t.* FROM v_teams t WHERE {visible} "
            "ORDER BY t.center_id, t.name, t.id LIMIT ? OFFSET ?",
            [*params, page.limit, page.offset],
        )
        today = self.clock().astimezone(self.timezone).date()
        keep = ("active_contracts", "referrals_awaiting_decision", "follow_ups_overdue")
        out = []
        for t in teams:
            w = self._workload(self.store, t, today)
            out.append({**(_out(t) or {}), **{k: w[k] for k in keep}})
        return out

    # --- worklists ----------------------------------------------------------------------

    def _org_visible(self, scope: Scope, org_hex: str, kind: str) -> bool:
        """An organisation of ``kind`` that exists and whose own lists ``scope`` may read."""
        visible, params = Access(scope).organisation("o.id")
        return (
            self.store.one(
                f"SELECT 1 AS x FROM v_orgs o WHERE o.id = ? AND o.kind = ? AND {visible}",
                [org_hex, kind, *params],
            )
            is not None
        )

    @reads("worklist.hospital")
    def hospital_worklist(
        self, scope: Scope, hospital_id: UUID, page: Page
    ) -> list[dict[str, Any]] | None:
        h = hospital_id.hex
        if not self._org_visible(scope, h, "hospital"):
            return None
        # within each urgency, decisions past their deadline first (OVERDUE_DECISION)
        now = moment_text(self.clock())
        overdue = OVERDUE_DECISION.format(r="r")
        rows = self.store.rows(
            "SELECT r.id, r.patient_id, p.name AS patient_name, r.center_id, r.team_id, "
            "r.department, r.urgency, r.green_channel, r.requested_at, r.requested_by, "
            f"r.decision_due, CASE WHEN {overdue} THEN 1 ELSE 0 END AS decision_overdue, "
            "r.transfer_form FROM v_referrals r LEFT JOIN v_patients p ON p.id = r.patient_id "
            "WHERE r.hospital_id = ? AND r.status = 'requested' "
            "ORDER BY CASE WHEN r.urgency = 'emergency' THEN 0 WHEN r.urgency = 'urgent' THEN 1 "
            "WHEN r.green_channel = 1 THEN 2 ELSE 3 END, decision_overdue DESC, r.requested_at, "
            "r.id LIMIT ? OFFSET ?",
            (now, h, page.limit, page.offset),
        )
        for r in rows:
            r["green_channel"] = bool(r["green_channel"])
            r["decision_overdue"] = bool(r["decision_overdue"])
            _forms(r)
            # the worklist shows the form's initial impression; the whole form: GET /referrals/{id}
            form = r.pop("transfer_form") or {}
            r["diagnoses"] = form.get("diagnoses", [])
        return _outs(rows)

    @reads("worklist.center")
    def center_worklist(
        self,
        scope: Scope,
        center_id: UUID,
        today: date,
        page: Page,
        patient_id: UUID | None = None,
    ) -> dict[str, list[dict[str, Any]]] | None:
        c = center_id.hex
        if not self._org_visible(scope, c, "community_center"):
            return None
        # one patient's rows only (a journey's overdue follow-ups): other patients are not read
        only, one = ("", ()) if patient_id is None else (" AND {} = ?", (patient_id.hex,))
        returns = self.store.rows(
            "SELECT r.id, r.patient_id, p.name AS patient_name, r.team_id, r.hospital_id, "
            "r.department, r.returned_at, r.follow_up_due FROM v_referrals r "
            "LEFT JOIN v_patients p ON p.id = r.patient_id "
            "WHERE r.center_id = ? AND r.status = 'returned'"
            + only.format("r.patient_id")
            + " ORDER BY r.returned_at, r.id LIMIT ? OFFSET ?",
            (c, *one, page.limit, page.offset),
        )
        overdue = self.store.rows(
            "SELECT o.id, o.patient_id, p.name AS patient_name, cp.team_id, o.reason, "
            "o.source_id, o.window_start, o.due FROM v_obligations o "
            "LEFT JOIN v_patients p ON p.id = o.patient_id "
            "LEFT JOIN v_care_patients cp ON cp.id = o.patient_id "
            f"WHERE o.center_id = ? AND {owed.overdue('o')}"
            + only.format("o.patient_id")
            + " ORDER BY o.due, o.id LIMIT ? OFFSET ?",
            (c, today.isoformat(), *one, page.limit, page.offset),
        )
        # transfers: asked of this center (its patients; release or decline them) and asked by
        # it (withdraw them); the asking center learns no more than what it named
        asked_of = self.store.rows(
            "SELECT rel.patient_id, p.name AS patient_name, rel.org_id AS center_id, "
            "o.name AS center_name, rel.team_id, rel.note AS consent, rel.started_at AS "
            "requested_at FROM v_relations rel JOIN v_relations home ON home.patient_id = "
            "rel.patient_id AND home.kind = 'home' AND home.ended_at IS NULL AND home.org_id = ? "
            "LEFT JOIN v_patients p ON p.id = rel.patient_id "
            "LEFT JOIN v_orgs o ON o.id = rel.org_id "
            "WHERE rel.kind = 'transfer' AND rel.ended_at IS NULL"
            + only.format("rel.patient_id")
            + " ORDER BY rel.started_at, rel.id LIMIT ? OFFSET ?",
            (c, *one, page.limit, page.offset),
        )
        asked_by = self.store.rows(
            "SELECT rel.patient_id, rel.team_id, rel.note AS consent, "
            "rel.started_at AS requested_at FROM v_relations rel WHERE rel.kind = 'transfer' "
            "AND rel.ended_at IS NULL AND rel.org_id = ?"
            + only.format("rel.patient_id")
            + " ORDER BY rel.started_at, rel.id LIMIT ? OFFSET ?",
            (c, *one, page.limit, page.offset),
        )
        return {
            "returns_awaiting_acknowledgement": _outs(returns),
            "overdue_follow_ups": _outs(overdue),
            "transfers_to_release": _outs(asked_of),
            "transfers_requested": _outs(asked_by),
        }

    # --- KPIs ---------------------------------------------------------------------------

    @reads(None)  # figures over centers and districts: no patient
    @replayed
    def kpis(
        self,
        scope: Scope,
        start: date,
        end: date,
        center_id: UUID | None = None,
        district: str | None = None,
        as_of: datetime | None = None,
    ) -> dict[str, Any] | None:
        if center_id is not None and not self._org_visible(
            scope, center_id.hex, "community_center"
        ):
            return None
        if not (district is None or scope.everything or district == scope.district):
            return None
        db = self._db(as_of)
        where, params = ["o.kind = 'community_center'"], []
        if center_id is not None:
            where.append("o.id = ?")
            params.append(center_id.hex)
        if district is not None:
            where.append("o.district = ?")
            params.append(district)
        visible, visible_params = Access(scope).organisation("o.id")
        centers = [
            r["id"]
            for r in db.rows(
                f"SELECT o.id FROM v_orgs o WHERE {' AND '.join(where)} AND {visible}",
                [*params, *visible_params],
            )
        ]
        figures = formulas.compute(self._kpi_inputs(db, centers, start, end, as_of))
        return {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "center_id": str(center_id) if center_id else None,
            "district": district,
            "centers": len(centers),
            **figures,
        }

    def _kpi_inputs(
        self,
        db: ViewStore,
        centers: list[str],
        start: date,
        end: date,
        as_of: datetime | None = None,
    ) -> formulas.KpiInputs:
        i = formulas.KpiInputs()
        if not centers:
            return i
        s, e, marks = start.isoformat(), end.isoformat(), placeholders(centers)
        # The period's days are the deployment's; moments in the views are UTC text.
        since = moment_text(datetime.combine(start, datetime.min.time(), self.timezone))
        until = moment_text(
            datetime.combine(end + timedelta(days=1), datetime.min.time(), self.timezone)
        )
        for c in centers:
            found = db.one(
                "SELECT total, key_population FROM v_residents WHERE center_id = ? AND as_of <= ? "
                "ORDER BY as_of DESC LIMIT 1",
                (c, e),
            ) or db.one(
                "SELECT total, key_population FROM v_residents WHERE center_id = ? "
                "ORDER BY as_of LIMIT 1",
                (c,),
            )
            if found:
                i.residents += int(found["total"])
                i.residents_key += int(found["key_population"])
        old, young = add_years(end, -65).isoformat(), add_years(end, -7).isoformat()
        signed = db.one(
            "SELECT COUNT(DISTINCT c.patient_id) AS n, COUNT(DISTINCT CASE WHEN p.tags <> '' "
            "OR p.born <= ? OR p.born > ? THEN c.patient_id END) AS k "
            "FROM v_contracts c JOIN v_care_patients p ON p.id = c.patient_id "
            f"WHERE c.center_id IN ({marks}) AND c.start_date <= ? AND c.end_date >= ? "
            "AND (c.ended_on IS NULL OR c.ended_on > ?)",
            [old, young, *centers, e, e, e],
        )
        if signed:
            i.signed, i.signed_key = int(signed["n"] or 0), int(signed["k"] or 0)
        due = db.one(
            "SELECT COUNT(*) AS n, SUM(CASE WHEN status = 'done' THEN 1 ELSE 0 END) AS k "
            f"FROM v_obligations WHERE center_id IN ({marks}) AND status <> 'withdrawn' "
            "AND due >= ? AND due <= ?",
            [*centers, s, e],
        )
        if due:
            i.obligations_due, i.obligations_done = int(due["n"] or 0), int(due["k"] or 0)
        for r in db.rows(
            "SELECT requested_at, decided_at FROM v_referrals WHERE direction = 'up' "
            f"AND center_id IN ({marks}) AND decided_at IS NOT NULL "
            "AND requested_at >= ? AND requested_at < ?",
            [*centers, since, until],
        ):
            hours = (
                datetime.fromisoformat(r["decided_at"]) - datetime.fromisoformat(r["requested_at"])
            ).total_seconds() / 3600
            i.turnaround_hours.append(hours)
        # decisions due (taken, or past their deadline by the period's end or now (the as-of
        # moment), whichever is first, and not cancelled before it) and of those overdue
        cutoff = min(until, moment_text(as_of or self.clock()))
        late = db.one(
            f"SELECT SUM(CASE WHEN {OVERDUE_DECISION.format(r='r')} THEN 1 ELSE 0 END) AS k, "
            "COUNT(*) AS n FROM v_referrals r WHERE r.direction = 'up' "
            f"AND r.center_id IN ({marks}) AND r.requested_at >= ? AND r.requested_at < ? "
            "AND r.decision_due IS NOT NULL AND (r.decided_at IS NOT NULL OR "
            "(r.decision_due <= ? AND (r.cancelled_at IS NULL OR r.cancelled_at >= r.decision_due)))",
            [cutoff, *centers, since, until, cutoff],
        )
        if late:
            i.decisions_due, i.decisions_overdue = int(late["n"] or 0), int(late["k"] or 0)
        # the loop closes when the return's own follow-up obligation is met on time (the
        # visit's day, however late it was written up): the one definition, owed.on_time
        loop = db.one(
            f"SELECT COUNT(*) AS n, SUM(CASE WHEN {owed.on_time('o')} THEN 1 ELSE 0 END) AS k "
            "FROM v_referrals r JOIN v_obligations o ON o.source_id = r.id "
            "AND o.reason = 'return_to_community' "
            f"WHERE r.center_id IN ({marks}) AND r.returned_at >= ? AND r.returned_at < ? "
            "AND o.status <> 'withdrawn' AND o.due <= ?",
            [*centers, since, until, e],
        )
        if loop:
            i.returns_due, i.returns_closed = int(loop["n"] or 0), int(loop["k"] or 0)
        districts = [
            r["district"]
            for r in db.rows(f"SELECT DISTINCT district FROM v_orgs WHERE id IN ({marks})", centers)
        ]
        quota = db.one(
            "SELECT COALESCE(SUM(slots), 0) AS n, COALESCE(SUM(booked), 0) AS k FROM v_quotas "
            f"WHERE (reserved_center IN ({marks}) OR reserved_district IN ({placeholders(districts)})) "
            "AND session_date >= ? AND session_date <= ?",
            [*centers, *districts, s, e],
        )
        if quota:
            i.quota_slots, i.quota_booked = int(quota["n"]), int(quota["k"])
        shows = db.one(
            "SELECT SUM(CASE WHEN status IN ('attended', 'no_show') THEN 1 ELSE 0 END) AS n, "
            "SUM(CASE WHEN status = 'no_show' THEN 1 ELSE 0 END) AS k FROM v_bookings "
            f"WHERE center_id IN ({marks}) AND session_date >= ? AND session_date <= ?",
            [*centers, s, e],
        )
        if shows:
            i.attendance_recorded, i.no_shows = int(shows["n"] or 0), int(shows["k"] or 0)
        return i

    # --- the read access log (auditors) --------------------------------------------------------

    def _auditable(self, scope: Scope, patient_id: UUID) -> bool:
        """Only auditors read the access log, of a patient that exists."""
        if not scope.everything:
            return False
        found = self.store.one("SELECT 1 AS x FROM v_patients WHERE id = ?", (patient_id.hex,))
        return found is not None

    @reads("access-log", subject="patient_id")
    def access_entries(
        self, scope: Scope, patient_id: UUID, page: Page
    ) -> list[dict[str, Any]] | None:
        if not self._auditable(scope, patient_id):
            return None
        return access.entries(self.store, str(patient_id), page.limit, page.offset)

    @reads("access-report", subject="patient_id")
    def access_report(self, scope: Scope, patient_id: UUID) -> dict[str, Any] | None:
        if not self._auditable(scope, patient_id):
            return None
        return access.report(self.store, str(patient_id), datetime.now(self.timezone))

    # --- internal: no scope -----------------------------------------------------------------

    def _found_by(self, number: str) -> tuple[str, list[Any]]:
        """SQL (alias ``p`` for ``v_patients``) matching patients by a resident id number,
        through its blind index: kept beside each patient's key (``personal_keys``, in the
        live store) or, for patients registered before personal data was sealed, in the view."""
        keyring = self.reader.keyring
        if keyring is None:
            return "p.national_id_index = ?", [number]
        index = keyring.blind_index(number)
        return (
            f"(p.national_id_index = ? OR p.id IN (SELECT subject FROM {KEYS} "
            "WHERE found_by = ? AND wrapped IS NOT NULL))",
            [index, index],
        )

    def patient_id_by_national_id(self, national_id: str) -> UUID | None:
        """Internal and unscoped (a hospital's return names the patient by national id; the
        domain then checks the name): never answer a reader with it."""
        by_number, number_params = self._found_by(national_id)
        row = self.store.one(
            f"SELECT p.id FROM v_patients p WHERE {by_number} AND p.erased_at IS NULL "
            "ORDER BY p.id LIMIT 1",
            number_params,
        )
        return None if row is None else UUID(row["id"])
