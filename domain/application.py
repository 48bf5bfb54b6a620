"""The care-coordination application: every use case on one event store (one ordered log).

Use cases are thin: load the aggregates, ask them to decide, save what they decided in one
atomic write. A version conflict (another request changed an aggregate meanwhile) is retried
from the start, so rules hold under concurrent requests.
"""

from __future__ import annotations

import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, ParamSpec, TypeVar, cast
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    IntegrityError,
    JSONTranscoder,
    ProcessRecorder,
    Tracking,
    Transcoder,
)

from domain.common import (
    Actor,
    ActorAsDict,
    DateAsISO,
    DomainError,
    InvalidValue,
    NotFound,
    OrjsonTranscoder,
)
from domain.contracts import Contract, ContractNotActive, ContractStatus
from domain.followups import (
    FollowUps,
    ObligationReason,
    contract_obligations,
    single_obligation,
)
from domain.organisations import NotACommunityCenter, Organisation
from domain.patients import Patient, Tag
from domain.quotas import Quota
from domain.referrals import Referral
from domain.teams import CareTeam

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A", bound=Aggregate)

MAX_ATTEMPTS = 30
#: Retry pauses: BACKOFF_BASE * 2**attempt seconds at most, never more than BACKOFF_CAP.
BACKOFF_BASE = 0.001
BACKOFF_CAP = 0.1
DEFAULT_TIMEZONE = "Asia/Shanghai"
#: Nothing in the log happened before this.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
#: Back-dated entries are fine; entries from the future are not (small clock skew allowed).
CLOCK_SKEW = timedelta(minutes=5)


class AlreadyExists(DomainError):
    """The id chosen for a new record is already taken."""

    code = "already-exists"


class ConflictPersisted(DomainError):
    """Concurrent writers kept changing the same aggregate; the request was not applied."""

    code = "too-much-contention"


@dataclass(frozen=True)
class Outcome:
    """What a command did: the aggregate it created or changed and the log position reached."""

    id: UUID
    position: int


class Batch:
    """What use cases run inside :meth:`CareCoordination.batch` decided, not yet recorded.

    Aggregates loaded or changed in the batch are kept (an identity map), so a later use case in
    the same batch sees the changes of an earlier one.
    """

    def __init__(self, autoflush: int | None = None) -> None:
        self.processing: ProcessingEvent[UUID] = ProcessingEvent()
        self.aggregates: dict[UUID, Aggregate] = {}
        self.absent: set[UUID] = set()
        #: Write the events collected so far whenever there are this many (bulk mode).
        self.autoflush = autoflush
        #: The log positions (first, last) the batch's events took when last recorded.
        self.recorded: tuple[int, int] | None = None

    def seed(self, aggregate: Aggregate) -> None:
        """Offer an aggregate loaded elsewhere (in bulk) so the use cases need not load it."""
        self.aggregates.setdefault(aggregate.id, aggregate)

    def seed_absent(self, ids: set[UUID]) -> None:
        """Say that these aggregates do not exist (a bulk read found nothing for them)."""
        self.absent |= ids - self.aggregates.keys()

    @property
    def size(self) -> int:
        """How many events the batch holds."""
        return len(self.processing.events)

    @property
    def dirty(self) -> bool:
        """A use case changed an aggregate and failed before committing it: the batch is spoilt."""
        return any(a.pending_events for a in self.aggregates.values())


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, full jitter."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def retrying(func: Callable[P, R]) -> Callable[P, R]:
    """Re-run a use case from the start when an optimistic-concurrency conflict occurs.

    The first attempt runs freely. After a conflict, the use case is re-run while holding a
    lock shared by this process's retries of the same use case, pausing (exponential backoff,
    full jitter) between further conflicts: the losers of a race on one hot aggregate (many
    bookings of one quota at once) queue instead of colliding again and again. Between
    processes the optimistic check still decides; the lock only saves wasted attempts.
    """
    retries = threading.RLock()

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except IntegrityError:
            pass
        with retries:
            for attempt in range(1, MAX_ATTEMPTS):
                try:
                    return func(*args, **kwargs)
                except IntegrityError:
                    time.sleep(backoff(attempt))
        raise ConflictPersisted("the request kept conflicting with concurrent changes")

    return wrapper


class CareCoordination(Application[UUID]):
    """Organisations, teams, patients, contracts, referrals, quotas and follow-ups."""

    name = "carecoordination"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        timezone: tzinfo | None = None,
    ) -> None:
        super().__init__(env=dict(env or {}))
        self.clock = clock or (lambda: datetime.now(UTC))
        #: Calendar days (due dates, session days, "today") are days of this zone.
        self.timezone = timezone or ZoneInfo(DEFAULT_TIMEZONE)
        self._local = threading.local()

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON documents, written with orjson (see :class:`OrjsonTranscoder`),
        unless the environment names another transcoder (``TRANSCODER_TOPIC``)."""
        if self.env.get("TRANSCODER_TOPIC"):
            return super().construct_transcoder()
        transcoder = OrjsonTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(DateAsISO())
        transcoder.register(ActorAsDict())

    # --- plumbing -------------------------------------------------------------------------

    def load(self, cls: type[A], id: UUID) -> A:
        """The aggregate ``id`` of type ``cls``, or :class:`NotFound`."""
        batch = self._batch()
        found: Aggregate | None = batch.aggregates.get(id) if batch else None
        if found is None and batch is not None and id in batch.absent:
            raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__)
        if found is None:
            try:
                found = self.repository.get(id)
            except AggregateNotFoundError:
                raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__) from None
            if batch is not None:
                batch.aggregates[id] = found
        if not isinstance(found, cls):
            raise NotFound(f"no {cls.__name__.lower()} {id}", kind=cls.__name__)
        return found

    def load_at(self, id: UUID, version: int | None = None) -> Aggregate:
        """One aggregate as of one of its versions (an audit of its history)."""
        try:
            return cast(Aggregate, self.repository.get(id, version=version))
        except AggregateNotFoundError:
            raise NotFound(f"nothing recorded for {id}") from None

    def _new_id(self, id: UUID | None) -> UUID:
        """A new aggregate's id: the one the caller chose (refused when taken, which is no
        race to retry) or a random one. Inside a batch the write itself refuses a taken id."""
        if id is None:
            return uuid4()
        if self._batch() is None and self.recorder.select_events(id, limit=1):
            raise AlreadyExists(f"{id} is already taken", id=str(id))
        return id

    @contextmanager
    def recorded_as_of(self, moment: datetime) -> Iterator[None]:
        """Record as if it were ``moment``: for writing a past history as it was lived (the
        demo, test stories), where rules that look at the recording time (a quota's cutoff)
        must see the past. Not for serving: it changes the clock of this application."""
        saved = self.clock
        self.clock = lambda: moment
        try:
            yield
        finally:
            self.clock = saved

    def now(self) -> datetime:
        """The recording moment, in the deployment's time zone."""
        return self.clock().astimezone(self.timezone)

    def when(self, at: datetime | None) -> datetime:
        """When a step happened: now, or a back-dated moment (not in the future, not before
        1900), in the deployment's time zone, so that ``.date()`` is the local calendar day."""
        now = self.now()
        if at is None:
            return now
        if at.tzinfo is None:
            raise InvalidValue("a moment must carry a timezone", field="at")
        if at > now + CLOCK_SKEW:
            raise InvalidValue("a step cannot be recorded before it happens", field="at")
        if at < EARLIEST:
            raise InvalidValue("a moment before 1900 is not a care event", field="at")
        return at.astimezone(self.timezone)

    def commit(self, *aggregates: Aggregate | None) -> int:
        """Record what the aggregates decided, atomically; the log position reached.

        Inside :meth:`batch` nothing is written yet: the events join the batch and the position
        is 0 (unknown until :meth:`record_batch`).
        """
        batch = self._batch()
        if batch is not None:
            for aggregate in aggregates:
                if aggregate is not None:
                    # What ProcessingEvent.collect_events does, without its isinstance checks
                    # against runtime protocols (slow on Python 3.11, and per use case here).
                    batch.processing.events.extend(aggregate.collect_events())
                    batch.processing.aggregates[aggregate.id] = aggregate
                    batch.aggregates[aggregate.id] = aggregate
            if batch.autoflush is not None and batch.size >= batch.autoflush:
                self.record_batch(batch)
            return 0
        recordings = self.save(*aggregates)
        return max((r.notification.id for r in recordings), default=self.max_position())

    # --- batches: several use cases, one transaction (for consumers of other systems) ------

    def _batch(self) -> Batch | None:
        batch: Batch | None = getattr(self._local, "batch", None)
        return batch

    @contextmanager
    def bulk(self, flush_every: int = 1000) -> Iterator[Batch]:
        """Single-writer bulk mode for generating histories (the demo, benchmarks): a batch
        written about ``flush_every`` events at a time, in the order the use cases decided them,
        instead of one transaction per use case. The aggregates stay in the batch as a cache,
        which is only right while nothing else writes."""
        with self.batch(autoflush=flush_every) as batch:
            yield batch
            self.record_batch(batch)

    @contextmanager
    def batch(self, autoflush: int | None = None) -> Iterator[Batch]:
        """Run use cases in this thread without writing; :meth:`record_batch` writes them.

        Use cases keep their signatures and rules. One that raises leaves the batch as it was,
        unless it changed an aggregate before failing (:attr:`Batch.dirty`): then discard the
        batch and run its commands again without that one.
        """
        if self._batch() is not None:
            raise RuntimeError("batches do not nest")
        self._local.batch = batch = Batch(autoflush)
        try:
            yield batch
        finally:
            self._local.batch = None

    def record_batch(self, batch: Batch, tracking: Tracking | None = None, **kwargs: Any) -> int:
        """Write a batch's events and ``tracking`` (a position in another system's log) in one
        transaction; ``kwargs`` go to the recorder. Raises ``IntegrityError`` on a conflict (an
        aggregate changed meanwhile, or the tracked position was already recorded)."""
        if batch.dirty:
            raise RuntimeError("a failed use case left uncommitted changes in the batch")
        if tracking is not None and not isinstance(self.recorder, ProcessRecorder):
            raise RuntimeError("tracking needs a process recorder (APPLICATION_RECORDER_TOPIC)")
        batch.processing.tracking = tracking
        batch.processing.saved_kwargs.update(kwargs)
        recordings = self._record(batch.processing) if batch.processing.events or tracking else []
        self._take_snapshots(batch.processing)
        self._notify(recordings)
        batch.processing = ProcessingEvent()
        positions = [r.notification.id for r in recordings]
        batch.recorded = (min(positions), max(positions)) if positions else None
        return max(positions, default=0)

    def max_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    def _followups(self, patient: Patient, actor: Actor, at: datetime) -> FollowUps:
        try:
            return self.load(FollowUps, FollowUps.id_for(patient.id))
        except NotFound:
            return FollowUps.open(patient.id, patient.center_id, actor, at)

    def _owe_follow_up(
        self,
        patient: Patient,
        reason: str,
        source_id: UUID,
        due: date,
        actor: Actor,
        when: datetime,
    ) -> FollowUps:
        """The patient's follow-ups, owing one more (after a referral or a return)."""
        followups = self._followups(patient, actor, when)
        followups.schedule([single_obligation(reason, source_id, when.date(), due)], actor, when)
        return followups

    # --- organisations ---------------------------------------------------------------------

    @retrying
    def register_organisation(
        self,
        kind: str,
        name: str,
        district: str,
        actor: Actor,
        level: int | None = None,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        org = Organisation.register(
            self._new_id(id), kind, name, district, actor, self.when(at), level=level
        )
        return Outcome(org.id, self.commit(org))

    @retrying
    def add_department(
        self,
        hospital_id: UUID,
        code: str,
        name: str,
        actor: Actor,
        referral_contact: str | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        org = self.load(Organisation, hospital_id)
        org.add_department(code, name, referral_contact, actor, self.when(at))
        return Outcome(org.id, self.commit(org))

    @retrying
    def record_residents(
        self,
        center_id: UUID,
        total: int,
        key_population: int,
        as_of: date,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        org = self.load(Organisation, center_id)
        org.record_residents(total, key_population, as_of, actor, self.when(at))
        return Outcome(org.id, self.commit(org))

    # --- teams -----------------------------------------------------------------------------

    @retrying
    def form_team(
        self,
        center_id: UUID,
        name: str,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        center = self.load(Organisation, center_id)
        if not center.is_center:
            raise NotACommunityCenter("teams belong to community centers")
        team = CareTeam.form(self._new_id(id), center.id, name, actor, self.when(at))
        return Outcome(team.id, self.commit(team))

    @retrying
    def add_team_member(
        self,
        team_id: UUID,
        staff_id: str,
        name: str,
        role: str,
        org_id: UUID,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        team = self.load(CareTeam, team_id)
        home = self.load(Organisation, org_id)
        team.add_member(staff_id, name, role, home.id, home.is_hospital, actor, self.when(at))
        return Outcome(team.id, self.commit(team))

    @retrying
    def remove_team_member(
        self, team_id: UUID, staff_id: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        team = self.load(CareTeam, team_id)
        team.remove_member(staff_id, actor, self.when(at))
        return Outcome(team.id, self.commit(team))

    # --- patients --------------------------------------------------------------------------

    @retrying
    def register_patient(
        self,
        name: str,
        sex: str,
        birth_date: date,
        national_id: str,
        phone: str,
        center_id: UUID,
        actor: Actor,
        tags: tuple[str, ...] = (),
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        center = self.load(Organisation, center_id)
        if not center.is_center:
            raise NotACommunityCenter("patients register at a community center")
        when = self.when(at)
        patient = Patient.register(
            self._new_id(id),
            name,
            sex,
            birth_date,
            national_id,
            phone,
            center.district,
            center.id,
            actor,
            when,
        )
        for tag in tags:
            patient.tag(tag, actor, when)
        return Outcome(patient.id, self.commit(patient))

    @retrying
    def tag_patient(
        self,
        patient_id: UUID,
        tag: str,
        actor: Actor,
        present: bool = True,
        at: datetime | None = None,
    ) -> Outcome:
        patient = self.load(Patient, patient_id)
        if present:
            patient.tag(tag, actor, self.when(at))
        else:
            patient.untag(tag, actor, self.when(at))
        return Outcome(patient.id, self.commit(patient))

    @retrying
    def move_patient_away(
        self, patient_id: UUID, destination: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        patient.move_away(destination, actor, when)
        # Moving out of the area ends the contract with the team here.
        contract: Contract | None = None
        if patient.contract_id is not None:
            contract = self.load(Contract, patient.contract_id)
            if contract.status == ContractStatus.ACTIVE:
                contract.terminate(f"moved out of the area: {destination}", actor, when)
            patient.release_contract(contract.id, actor, when)
            followups = self._followups(patient, actor, when)
            followups.withdraw(contract.id, when.date(), "moved out of the area", actor, when)
            return Outcome(patient.id, self.commit(patient, contract, followups))
        return Outcome(patient.id, self.commit(patient))

    # --- contracts -------------------------------------------------------------------------

    @retrying
    def sign_contract(
        self,
        patient_id: UUID,
        team_id: UUID,
        package: str,
        start: date,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        [outcome] = self._sign([patient_id], team_id, package, start, actor, [id], None, at)
        return outcome

    @retrying
    def sign_household(
        self,
        patient_ids: list[UUID],
        team_id: UUID,
        package: str,
        start: date,
        actor: Actor,
        household_id: UUID | None = None,
        at: datetime | None = None,
        ids: list[UUID] | None = None,
    ) -> list[Outcome]:
        """Several members of one household sign together: all of them, or none.

        ``ids`` optionally names the new contracts, one per patient, in the same order.
        """
        if len(set(patient_ids)) != len(patient_ids) or not patient_ids:
            raise InvalidValue("a household signs with distinct patients", field="patient_ids")
        if ids is not None and len(set(ids)) != len(patient_ids):
            raise InvalidValue("one distinct contract id per patient", field="ids")
        return self._sign(
            patient_ids,
            team_id,
            package,
            start,
            actor,
            list(ids) if ids is not None else [None] * len(patient_ids),
            household_id or uuid4(),
            at,
        )

    def _sign(
        self,
        patient_ids: list[UUID],
        team_id: UUID,
        package: str,
        start: date,
        actor: Actor,
        ids: list[UUID | None],
        household_id: UUID | None,
        at: datetime | None,
    ) -> list[Outcome]:
        when = self.when(at)
        team = self.load(CareTeam, team_id)
        team.ensure_can_take_contracts()
        changed: list[Aggregate] = []
        contracts: list[Contract] = []
        for patient_id, cid in zip(patient_ids, ids, strict=True):
            patient = self.load(Patient, patient_id)
            contract = Contract.sign(
                self._new_id(cid),
                patient.id,
                team.id,
                team.center_id,
                package,
                start,
                actor,
                when,
                household_id=household_id,
            )
            patient.take_contract(
                contract.id, contract.start, contract.end, actor, when, center_id=team.center_id
            )
            followups = self._followups(patient, actor, when)
            followups.schedule(
                contract_obligations(contract.id, patient.tags, contract.start, contract.end),
                actor,
                when,
            )
            changed += [contract, patient, followups]
            contracts.append(contract)
        position = self.commit(*changed)
        return [Outcome(c.id, position) for c in contracts]

    @retrying
    def renew_contract(
        self, contract_id: UUID, years: int, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        patient = self.load(Patient, contract.patient_id)
        old_end = contract.end
        new_end = contract.renew(years, actor, when)
        patient.extend_contract(contract.id, new_end, actor, when)
        followups = self._followups(patient, actor, when)
        followups.schedule(
            contract_obligations(contract.id, patient.tags, old_end + timedelta(days=1), new_end),
            actor,
            when,
        )
        return Outcome(contract.id, self.commit(contract, patient, followups))

    @retrying
    def terminate_contract(
        self, contract_id: UUID, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        patient = self.load(Patient, contract.patient_id)
        contract.terminate(reason, actor, when)
        patient.release_contract(contract.id, actor, when)
        followups = self._followups(patient, actor, when)
        followups.withdraw(contract.id, when.date(), "contract terminated", actor, when)
        return Outcome(contract.id, self.commit(contract, patient, followups))

    @retrying
    def expire_contract(
        self, contract_id: UUID, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        patient = self.load(Patient, contract.patient_id)
        contract.expire(when.date(), actor, when)
        patient.release_contract(contract.id, actor, when)
        return Outcome(contract.id, self.commit(contract, patient))

    @retrying
    def change_contract_team(
        self,
        contract_id: UUID,
        team_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        team = self.load(CareTeam, team_id)
        team.ensure_can_take_contracts()
        contract.change_team(team.id, team.center_id, reason, actor, when)
        # A team of another center takes over the patient's care and follow-ups with it.
        patient = self.load(Patient, contract.patient_id)
        center = self.load(Organisation, team.center_id)
        patient.transfer(center.id, center.district, actor, when)
        followups = self._followups(patient, actor, when)
        followups.transfer(center.id, actor, when)
        return Outcome(contract.id, self.commit(contract, patient, followups))

    # --- referrals -------------------------------------------------------------------------

    @retrying
    def request_referral(
        self,
        patient_id: UUID,
        hospital_id: UUID,
        department: str,
        reason: str,
        diagnosis: str,
        urgency: str,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        if not patient.has_active_contract(when.date()) or patient.contract_id is None:
            raise ContractNotActive("only a contracted patient is referred by a family doctor")
        contract = self.load(Contract, patient.contract_id)
        team = self.load(CareTeam, contract.team_id)
        hospital = self.load(Organisation, hospital_id)
        hospital.ensure_department(department)
        referral = Referral.request(
            self._new_id(id),
            patient.id,
            contract.id,
            team.id,
            team.center_id,
            hospital.id,
            department,
            reason,
            diagnosis,
            urgency,
            Tag.REGISTERED_POOR in patient.tags,
            actor,
            when,
            team_speaks_for_actor=team.speaks_for(actor),
        )
        followups = self._owe_follow_up(
            patient,
            ObligationReason.AFTER_REFERRAL,
            referral.id,
            referral.follow_up_due,
            actor,
            when,
        )
        return Outcome(referral.id, self.commit(referral, followups))

    def _referral_step(self, referral_id: UUID, step: Callable[[Referral], None]) -> Outcome:
        referral = self.load(Referral, referral_id)
        step(referral)
        return Outcome(referral.id, self.commit(referral))

    def _speaks(self, referral: Referral, actor: Actor) -> bool:
        if referral.team_id is None:
            return False
        return self.load(CareTeam, referral.team_id).speaks_for(actor)

    @retrying
    def accept_referral(
        self, referral_id: UUID, actor: Actor, note: str = "", at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.accept(actor, when, note))

    @retrying
    def reject_referral(
        self,
        referral_id: UUID,
        reason_code: str,
        actor: Actor,
        note: str = "",
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.reject(reason_code, note, actor, when))

    @retrying
    def cancel_referral(
        self, referral_id: UUID, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(
            referral_id, lambda r: r.cancel(reason, actor, when, self._speaks(r, actor))
        )

    @retrying
    def record_arrival(
        self, referral_id: UUID, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.arrive(actor, when))

    @retrying
    def record_admission(
        self, referral_id: UUID, ward: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.admit(ward, actor, when))

    @retrying
    def return_to_community(
        self,
        referral_id: UUID,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        referral = self.load(Referral, referral_id)
        referral.return_to_community(
            summary, prescriptions, rehabilitation, follow_up_due, actor, when
        )
        patient = self.load(Patient, referral.patient_id)
        followups = self._owe_follow_up(
            patient, ObligationReason.RETURN_TO_COMMUNITY, referral.id, follow_up_due, actor, when
        )
        return Outcome(referral.id, self.commit(referral, followups))

    @retrying
    def start_return(
        self,
        patient_id: UUID,
        hospital_id: UUID,
        department: str,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        hospital = self.load(Organisation, hospital_id)
        hospital.ensure_department(department)
        referral = Referral.start_return(
            self._new_id(id),
            patient.id,
            patient.center_id,
            hospital.id,
            department,
            summary,
            prescriptions,
            rehabilitation,
            follow_up_due,
            actor,
            when,
        )
        followups = self._owe_follow_up(
            patient, ObligationReason.RETURN_TO_COMMUNITY, referral.id, follow_up_due, actor, when
        )
        return Outcome(referral.id, self.commit(referral, followups))

    @retrying
    def acknowledge_return(
        self, referral_id: UUID, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(
            referral_id,
            lambda r: r.acknowledge_return(actor, when, self._speaks(r, actor)),
        )

    # --- follow-ups ------------------------------------------------------------------------

    @retrying
    def record_follow_up(
        self,
        patient_id: UUID,
        on: date,
        kind: str,
        actor: Actor,
        measurements: dict[str, float] | None = None,
        risk_level: str | None = None,
        note: str = "",
        obligation_id: UUID | None = None,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        """Record a visit; when it fulfils a referral's follow-up, the referral records it too."""
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        followups = self._followups(patient, actor, when)
        visit_id = id or uuid4()
        fulfilled = followups.record_visit(
            visit_id,
            on,
            kind,
            dict(measurements or {}),
            risk_level,
            note,
            actor,
            when,
            obligation_id=obligation_id,
        )
        referral: Referral | None = None
        if fulfilled is not None:
            obligation = followups.obligations[fulfilled]
            if obligation["reason"] in (
                ObligationReason.AFTER_REFERRAL,
                ObligationReason.RETURN_TO_COMMUNITY,
            ):
                referral = self.load(Referral, obligation["source_id"])
                referral.record_follow_up(
                    visit_id, on, actor, when, patient_center_id=followups.center_id
                )
        return Outcome(visit_id, self.commit(followups, referral))

    # --- quotas ----------------------------------------------------------------------------

    @retrying
    def publish_quota(
        self,
        hospital_id: UUID,
        kind: str,
        department: str,
        session_date: date,
        slots: int,
        release_at: datetime,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
        **options: Any,
    ) -> Outcome:
        hospital = self.load(Organisation, hospital_id)
        hospital.ensure_department(department)
        quota = Quota.publish(
            self._new_id(id),
            hospital.id,
            kind,
            department,
            session_date,
            slots,
            release_at,
            actor,
            self.when(at),
            **options,
        )
        return Outcome(quota.id, self.commit(quota))

    @retrying
    def book_slot(
        self,
        quota_id: UUID,
        patient_id: UUID,
        actor: Actor,
        referral_id: UUID | None = None,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        quota = self.load(Quota, quota_id)
        patient = self.load(Patient, patient_id)
        center = self.load(Organisation, actor.org_id)
        if referral_id is not None:
            referral = self.load(Referral, referral_id)
            if referral.patient_id != patient.id:
                raise InvalidValue("the referral is for another patient", field="referral_id")
        team_id = None
        centers = {patient.center_id}
        if patient.contract_id is not None:
            contract = self.load(Contract, patient.contract_id)
            team_id, centers = contract.team_id, centers | {contract.center_id}
        booking_id = id or uuid4()
        quota.book(
            booking_id,
            patient.id,
            referral_id,
            actor,
            center.district,
            when,
            team_id=team_id,
            booker_is_center=center.is_center,
            recorded=self.now(),
            patient_centers=frozenset(centers),
        )
        return Outcome(booking_id, self.commit(quota))

    @retrying
    def cancel_booking(
        self,
        quota_id: UUID,
        booking_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.cancel_booking(booking_id, reason, actor, self.when(at), recorded=self.now())
        return Outcome(booking_id, self.commit(quota))

    @retrying
    def release_quota(self, quota_id: UUID, actor: Actor, at: datetime | None = None) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.release(actor, self.when(at))
        return Outcome(quota.id, self.commit(quota))

    @retrying
    def record_attendance(
        self,
        quota_id: UUID,
        booking_id: UUID,
        attended: bool,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.record_attendance(booking_id, attended, actor, self.when(at))
        return Outcome(booking_id, self.commit(quota))
