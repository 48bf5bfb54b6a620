"""Who receives which domain event, and which of its fields: the relay's routing table.

The relay reads the log in order and folds the care relationships as it goes, with the same
start and end rules as the ``relations`` view (:func:`projections.relations.relation_changes`),
so an event is routed by the relations *at that moment* (the view may be ahead or behind).
An event goes to the organisations related to it just before or just after it (so the event
that ends a relation still reaches the organisation it ends for):

=============  ==============================================================================
recipient      receives
=============  ==============================================================================
``center``     the patient's ``home`` center: every event of its patients (their registry
               entry, contracts, tags, follow-ups, referrals, bookings), personal data left
               out (:data:`consumers.messages.PERSONAL`)
``ever``       every organisation that was ever sent an event about the patient:
               ``Patient.Erased``, the erasure notice (each erases the patient too)
``hospital``   the hospital a referral or return is addressed to (its ``referral``/``return``
               relation): ``Referral.*`` of that referral; the hospital that publishes a
               quota: ``Quota.*`` of that quota (its bookings). Free text another
               organisation wrote is sent empty, the referral's contract and team as null
=============  ==============================================================================

Nobody else receives anything (a center asking for a transfer, other hospitals, events of
organisations and teams): an event type absent from :data:`ROUTES` goes to no partner. The
regional platform topic, when configured, receives every event unrouted.

The fold lives in memory: on start (or when another relay published meanwhile) the relay folds
the log from the beginning (or from where it was) up to its stored position, routing each event
again without sending it (:meth:`Router.replay`), so who was ever sent an event about a patient
survives a restart; a page that fails is undone (:meth:`Router.begin`, :meth:`Router.rollback`)
so the fold matches the stored position again without reading the log anew.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from projections.relations import HOME, REFERRAL, RETURN, Start, relation_changes

CENTER, HOSPITAL = "center", "hospital"
#: Every organisation that was ever sent an event about the patient (the erasure notice).
EVER = "ever"
_ABSENT = object()


@dataclass(frozen=True)
class Cut:
    """What a recipient kind does not get of an event: ``withheld`` fields are sent empty
    (``""``, or null for ids); ``others_text`` free-text fields are sent empty unless the
    recipient is the organisation that acted (``data.actor.org_id``)."""

    withheld: frozenset[str] = frozenset()
    others_text: frozenset[str] = frozenset()


ALL = Cut()
#: What a hospital gets of a referral: not the patient's contract or team.
#: ``resent_from`` names an earlier referral (rejected or cancelled, often by another hospital):
#: none of the receiving hospital's business.
_REFERRAL = Cut(withheld=frozenset({"contract_id", "team_id", "resent_from"}))

#: Event name (``Aggregate.EventName``, or ``Aggregate.*`` for every event of the aggregate)
#: -> recipient kind -> what it does not get. Absent: nobody.
ROUTES: dict[str, dict[str, Cut]] = {
    # An erased patient's partners erase them too: all that ever received their events.
    "Patient.Erased": {EVER: ALL},
    "Patient.*": {CENTER: ALL},
    "Contract.*": {CENTER: ALL},
    "FollowUps.*": {CENTER: ALL},
    "Referral.Requested": {CENTER: ALL, HOSPITAL: _REFERRAL},
    "Referral.ReturnStarted": {CENTER: ALL, HOSPITAL: _REFERRAL},
    "Referral.Accepted": {CENTER: ALL, HOSPITAL: Cut(others_text=frozenset({"note"}))},
    "Referral.Rejected": {CENTER: ALL, HOSPITAL: Cut(others_text=frozenset({"note"}))},
    "Referral.Cancelled": {CENTER: ALL, HOSPITAL: Cut(others_text=frozenset({"reason"}))},
    "Referral.PatientArrived": {CENTER: ALL, HOSPITAL: ALL},
    "Referral.PatientAdmitted": {CENTER: ALL, HOSPITAL: ALL},
    "Referral.ReturnedToCommunity": {CENTER: ALL, HOSPITAL: ALL},
    "Referral.ReturnAcknowledged": {CENTER: ALL, HOSPITAL: ALL},
    "Referral.FollowedUp": {CENTER: ALL, HOSPITAL: ALL},
    "Quota.Published": {HOSPITAL: ALL},
    "Quota.Released": {HOSPITAL: ALL},
    "Quota.Booked": {CENTER: ALL, HOSPITAL: ALL},
    "Quota.BookingCancelled": {CENTER: ALL, HOSPITAL: Cut(others_text=frozenset({"reason"}))},
    "Quota.Attended": {CENTER: ALL, HOSPITAL: ALL},
    "Quota.NoShow": {CENTER: ALL, HOSPITAL: ALL},
}


def route_of(name: str) -> Mapping[str, Cut]:
    """The recipients kinds of event ``name`` and what each does not get."""
    found = ROUTES.get(name)
    if found is None:
        found = ROUTES.get(name.split(".", 1)[0] + ".*", {})
    return found


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def apply_cut(fields: dict[str, Any], cut: Cut, recipient: UUID) -> dict[str, Any]:
    """``fields`` as ``recipient`` gets them under ``cut``."""
    if not cut.withheld and not cut.others_text:
        return fields
    out = dict(fields)
    actor = fields.get("actor")
    author = getattr(actor, "org_id", None)
    blank = set(cut.withheld)
    if author != recipient:
        blank |= cut.others_text
    for name in blank & out.keys():
        out[name] = "" if isinstance(out[name], str) else None
    return out


class Router:
    """The care relationships as of the last event observed, and who receives an event."""

    def __init__(self) -> None:
        #: Active relations: row id (as in the view) -> (kind, organisation, patient).
        self.relations: dict[str, tuple[str, UUID, UUID]] = {}
        #: The hospital of each quota.
        self.quotas: dict[UUID, UUID] = {}
        #: Patient -> every organisation sent an event about them (who an erasure reaches).
        self.received: dict[UUID, frozenset[UUID]] = {}
        #: The last log position observed (0: none).
        self.position = 0
        #: What :meth:`rollback` restores: (table, key, previous value or _ABSENT), in order.
        self._undo: list[tuple[dict[Any, Any], Any, Any]] | None = None
        self._begun_at = 0

    def begin(self) -> None:
        """Remember the changes from here on, to undo them if the page fails."""
        self._undo = []
        self._begun_at = self.position

    def commit(self) -> None:
        """The page is stored: forget what :meth:`rollback` would undo."""
        self._undo = None

    def rollback(self) -> None:
        """Back to the state at :meth:`begin`."""
        for table, key, previous in reversed(self._undo or []):
            if previous is _ABSENT:
                table.pop(key, None)
            else:
                table[key] = previous
        self.position = self._begun_at
        self._undo = None

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        if self._undo is not None:
            self._undo.append((table, key, table.get(key, _ABSENT)))
        if value is _ABSENT:
            table.pop(key, None)
        else:
            table[key] = value

    def observe(self, name: str, event: Any, position: int) -> None:
        """Fold event ``name`` (at log ``position``) into the relations."""
        if name == "Quota.Published":
            self._set(self.quotas, event.originator_id, _uuid(event.hospital_id))
        for change in relation_changes(name, event.originator_id, vars(event)):
            if isinstance(change, Start):
                relation = (change.kind, _uuid(change.org_id), _uuid(change.patient_id))
                self._set(self.relations, change.id, relation)
            else:
                self._set(self.relations, change.id, _ABSENT)
        self.position = position

    def _related(self, name: str, event: Any, patient: UUID) -> dict[str, set[UUID]]:
        found: dict[str, set[UUID]] = {
            CENTER: set(),
            HOSPITAL: set(),
            EVER: set(self.received.get(patient, ())),
        }
        home = self.relations.get(f"{HOME}:{patient}")
        if home is not None:
            found[CENTER].add(home[1])
        if name.startswith("Referral."):
            relation = self.relations.get(str(event.originator_id))
            if relation is not None and relation[0] in (REFERRAL, RETURN):
                found[HOSPITAL].add(relation[1])
        elif name.startswith("Quota."):
            hospital = self.quotas.get(event.originator_id)
            if hospital is not None:
                found[HOSPITAL].add(hospital)
        return found

    def route(
        self, name: str, event: Any, position: int, patient: UUID
    ) -> Iterator[tuple[UUID, Cut]]:
        """Observe the event and yield each recipient organisation with its cut: those related
        to it just before or just after it, of the kinds its route names."""
        routes = route_of(name)
        before = self._related(name, event, patient) if routes else {}
        self.observe(name, event, position)
        if not routes:
            return
        after = self._related(name, event, patient)
        sent: set[UUID] = set()
        for kind, cut in routes.items():
            for org in sorted(before[kind] | after[kind]):
                if org not in sent:  # one copy an organisation, the first kind's cut
                    sent.add(org)
                    yield org, cut
        known = self.received.get(patient, frozenset())
        if not sent <= known:
            self._set(self.received, patient, known | sent)

    def replay(self, name: str, event: Any, position: int, patient: UUID) -> None:
        """Fold an event published before (a relay starting, or following another): the
        relations, and who was sent it (:attr:`received`, whom an erasure notice reaches)."""
        for _ in self.route(name, event, position, patient):
            pass


def routing_document() -> dict[str, dict[str, Any]]:
    """:data:`ROUTES` as ``asyncapi.yaml`` states it (channel ``partnerOutbound``,
    ``x-routing``)."""
    return {
        name: {
            kind: {
                "withheld": sorted(cut.withheld),
                "others_text": sorted(cut.others_text),
            }
            for kind, cut in kinds.items()
        }
        for name, kinds in ROUTES.items()
    }
