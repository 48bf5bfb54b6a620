"""The care-coordination application: every use case on one event store (one ordered log).

Use cases are thin: load the aggregates, ask them to decide, commit what they decided in one
atomic write. How that works (all or nothing, retries on a version conflict, batches) is the
contract of :mod:`domain.unit_of_work`. Parameters after the first one or two are keyword-only,
so two ids cannot be swapped by position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, cast
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import JSONTranscoder, Transcoder

from domain.common import (
    Actor,
    ActorAsDict,
    DateAsISO,
    InvalidValue,
    NotFound,
    NotPermitted,
    OrjsonTranscoder,
)
from domain.contracts import Contract, ContractNotActive, ContractStatus
from domain.followups import (
    LOOP_REASONS,
    FollowUps,
    ObligationReason,
    contract_obligations,
    single_obligation,
)
from domain.organisations import NotACommunityCenter, Organisation
from domain.patients import Patient, Tag
from domain.quotas import Quota
from domain.referrals import Referral, ResentReferralNotFound
from domain.teams import CareTeam
from domain.unit_of_work import (
    AlreadyExists,
    Batch,
    Outcome,
    TooMuchContention,
    UnitOfWork,
    use_case,
)

__all__ = [
    "AlreadyExists",
    "Batch",
    "CareCoordination",
    "Outcome",
    "TooMuchContention",
]

DEFAULT_TIMEZONE = "Asia/Shanghai"
#: Nothing in the log happened before this.
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
#: Back-dated entries are fine; entries from the future are not (small clock skew allowed).
CLOCK_SKEW = timedelta(minutes=5)


class CareCoordination(UnitOfWork):
    """Organisations, teams, patients, contracts, referrals, quotas and follow-ups."""

    name = "carecoordination"

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock: Callable[[], datetime] | None = None,
        timezone: tzinfo | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock or (lambda: datetime.now(UTC))
        #: Calendar days (due dates, session days, "today") are days of this zone.
        self.timezone = timezone or ZoneInfo(DEFAULT_TIMEZONE)

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

    def load_at(self, id: UUID, version: int | None = None) -> Aggregate:
        """One aggregate as of one of its versions (an audit of its history)."""
        try:
            return cast(Aggregate, self.repository.get(id, version=version))
        except AggregateNotFoundError:
            raise NotFound(f"nothing recorded for {id}") from None

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

    def _followups(self, patient: Patient, actor: Actor, at: datetime) -> FollowUps:
        try:
            return self.load(FollowUps, FollowUps.id_for(patient.id))
        except NotFound:
            return FollowUps.open(patient.id, patient.center_id, actor, at)

    def _move_followups(self, patient: Patient, actor: Actor, at: datetime) -> FollowUps | None:
        """The patient's follow-ups (if any were ever owed) moved to the patient's center."""
        try:
            followups = self.load(FollowUps, FollowUps.id_for(patient.id))
        except NotFound:
            return None
        followups.transfer(patient.center_id, actor, at)
        return followups

    def _owe_follow_up(
        self,
        patient: Patient,
        *,
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

    @use_case
    def register_organisation(
        self,
        kind: str,
        *,
        name: str,
        district: str,
        actor: Actor,
        level: int | None = None,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        org = Organisation.register(
            self.new_id(id),
            kind=kind,
            name=name,
            district=district,
            actor=actor,
            at=self.when(at),
            level=level,
        )
        return Outcome(org.id, self.commit(org))

    @use_case
    def add_department(
        self,
        hospital_id: UUID,
        *,
        code: str,
        name: str,
        actor: Actor,
        referral_contact: str | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        org = self.load(Organisation, hospital_id)
        org.add_department(code, name, referral_contact, actor, self.when(at))
        return Outcome(org.id, self.commit(org))

    @use_case
    def record_residents(
        self,
        center_id: UUID,
        *,
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

    @use_case
    def form_team(
        self,
        center_id: UUID,
        *,
        name: str,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        center = self.load(Organisation, center_id)
        team = CareTeam.form(
            self.new_id(id), center_id=center.id, name=name, actor=actor, at=self.when(at)
        )
        if not center.is_center:
            raise NotACommunityCenter("teams belong to community centers")
        return Outcome(team.id, self.commit(team))

    @use_case
    def add_team_member(
        self,
        team_id: UUID,
        *,
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

    @use_case
    def remove_team_member(
        self, team_id: UUID, *, staff_id: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        team = self.load(CareTeam, team_id)
        team.remove_member(staff_id, actor, self.when(at))
        return Outcome(team.id, self.commit(team))

    # --- patients --------------------------------------------------------------------------

    @use_case
    def register_patient(
        self,
        name: str,
        *,
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
        if actor.org_id != center.id:
            raise NotPermitted("patients are registered by their own community center")
        if not center.is_center:
            raise NotACommunityCenter("patients register at a community center")
        when = self.when(at)
        patient = Patient.register(
            self.new_id(id),
            name=name,
            sex=sex,
            birth_date=birth_date,
            national_id=national_id,
            phone=phone,
            district=center.district,
            center_id=center.id,
            actor=actor,
            at=when,
        )
        for tag in tags:
            patient.tag(tag, actor, when)
        return Outcome(patient.id, self.commit(patient))

    @use_case
    def erase_patient(
        self, patient_id: UUID, *, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        """An administrator erases the patient (``Patient.Erased``: who, why, when); the
        deployment then destroys the patient's data key (``jiayi patients erase``)."""
        patient = self.load(Patient, patient_id)
        patient.erase(reason, actor, self.when(at))
        return Outcome(patient.id, self.commit(patient))

    @use_case
    def tag_patient(
        self,
        patient_id: UUID,
        *,
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

    @use_case
    def move_patient_away(
        self, patient_id: UUID, *, destination: str, actor: Actor, at: datetime | None = None
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

    @use_case
    def sign_contract(
        self,
        patient_id: UUID,
        *,
        team_id: UUID,
        package: str,
        start: date,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
    ) -> Outcome:
        [outcome] = self._sign(
            [patient_id],
            team_id=team_id,
            package=package,
            start=start,
            actor=actor,
            ids=[id],
            household_id=None,
            at=at,
        )
        return outcome

    @use_case
    def sign_household(
        self,
        patient_ids: list[UUID],
        *,
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
            team_id=team_id,
            package=package,
            start=start,
            actor=actor,
            ids=list(ids) if ids is not None else [None] * len(patient_ids),
            household_id=household_id or uuid4(),
            at=at,
        )

    def _sign(
        self,
        patient_ids: list[UUID],
        *,
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
        # Whose patients and whose team, before anything about them is told.
        patients = [self.load(Patient, patient_id) for patient_id in patient_ids]
        for patient in patients:
            patient.ensure_center(actor)
        if actor.org_id != team.center_id:
            raise NotPermitted("contracts are signed at the team's own community center")
        team.ensure_can_take_contracts()
        changed: list[Aggregate] = []
        contracts: list[Contract] = []
        for patient, cid in zip(patients, ids, strict=True):
            contract = Contract.sign(
                self.new_id(cid),
                patient_id=patient.id,
                team_id=team.id,
                center_id=team.center_id,
                package=package,
                start=start,
                actor=actor,
                at=when,
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

    @use_case
    def renew_contract(
        self, contract_id: UUID, *, years: int, actor: Actor, at: datetime | None = None
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

    @use_case
    def terminate_contract(
        self, contract_id: UUID, *, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        patient = self.load(Patient, contract.patient_id)
        contract.terminate(reason, actor, when)
        patient.release_contract(contract.id, actor, when)
        followups = self._followups(patient, actor, when)
        followups.withdraw(contract.id, when.date(), "contract terminated", actor, when)
        return Outcome(contract.id, self.commit(contract, patient, followups))

    @use_case
    def expire_contract(
        self, contract_id: UUID, *, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        patient = self.load(Patient, contract.patient_id)
        contract.expire(when.date(), actor, when)
        patient.release_contract(contract.id, actor, when)
        return Outcome(contract.id, self.commit(contract, patient))

    @use_case
    def change_contract_team(
        self,
        contract_id: UUID,
        *,
        team_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        """Another team of the contract's own center takes the contract (one step, by that
        center). A team of another center takes it only through a transfer
        (:meth:`request_transfer`, :meth:`release_transfer`): 409 ``transfer-required``."""
        when = self.when(at)
        contract = self.load(Contract, contract_id)
        team = self.load(CareTeam, team_id)
        contract.change_team(team.id, team.center_id, reason, actor, when)
        team.ensure_can_take_contracts()
        return Outcome(contract.id, self.commit(contract))

    # --- transfers between centers ---------------------------------------------------------

    @use_case
    def request_transfer(
        self,
        patient_id: UUID,
        *,
        national_id: str,
        name: str,
        team_id: UUID,
        consent: str,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        """The new center (staff of ``team_id``'s center) asks to care for the patient it
        identifies by ``national_id`` and ``name``, citing the patient's recorded consent. Without an active contract the patient moves at once
        (the new center then signs its own); otherwise the current center releases or
        declines, and until then nothing else changes."""
        when = self.when(at)
        team = self.load(CareTeam, team_id)
        if actor.org_id != team.center_id:
            raise NotPermitted("a transfer is requested by the new team's own center")
        center = self.load(Organisation, team.center_id)
        patient = self.load(Patient, patient_id)
        # the asking center knows the resident only as they came to it
        patient.ensure_identified_by(national_id, name)
        if patient.has_active_contract(when.date()) and not patient.moved_away:
            team.ensure_can_take_contracts()
        moved = patient.request_transfer(
            center_id=center.id,
            team_id=team.id,
            consent=consent,
            district=center.district,
            actor=actor,
            at=when,
        )
        followups = self._move_followups(patient, actor, when) if moved else None
        return Outcome(patient.id, self.commit(patient, followups))

    @use_case
    def release_transfer(
        self, patient_id: UUID, *, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        """The current center lets the patient go: the contract moves to the requested team,
        the patient's registry and follow-ups to its center, in one commit."""
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        request = patient.release_transfer(actor, when)
        center = self.load(Organisation, request["center_id"])
        team = self.load(CareTeam, request["team_id"])
        contract: Contract | None = None
        if patient.contract_id is not None and patient.has_active_contract(when.date()):
            contract = self.load(Contract, patient.contract_id)
            if contract.status == ContractStatus.ACTIVE:
                team.ensure_can_take_contracts()
                contract.change_team(
                    team.id,
                    team.center_id,
                    f"transfer to another center (consent {request['consent']})",
                    actor,
                    when,
                    transfer_released=True,
                )
        patient.transfer(center.id, center.district, actor, when)
        followups = self._move_followups(patient, actor, when)
        return Outcome(patient.id, self.commit(patient, contract, followups))

    @use_case
    def decline_transfer(
        self, patient_id: UUID, *, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        """The current center declines the pending request; the patient stays."""
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        patient.decline_transfer(reason, actor, when)
        return Outcome(patient.id, self.commit(patient))

    @use_case
    def withdraw_transfer(
        self, patient_id: UUID, *, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        """The requesting center withdraws its pending request."""
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        patient.withdraw_transfer(actor, when)
        return Outcome(patient.id, self.commit(patient))

    # --- referrals -------------------------------------------------------------------------

    @use_case
    def request_referral(
        self,
        patient_id: UUID,
        *,
        hospital_id: UUID,
        department: str,
        reason: str,
        urgency: str,
        actor: Actor,
        diagnosis: str = "",
        id: UUID | None = None,
        at: datetime | None = None,
        diagnoses: Sequence[Mapping[str, Any]] = (),
        past_history: str = "",
        treatment: str = "",
        referring_doctor: str = "",
        doctor_phone: str = "",
        resends: UUID | None = None,
    ) -> Outcome:
        """The two-way referral form up (转出单); ``diagnosis`` (free text, no code) is what
        requests carried before the form. ``resends`` names a rejected or cancelled referral
        of the patient that this one sends again: its follow-up obligation is carried on (same
        window and due date), the ended one's withdrawn."""
        when = self.when(at)
        patient = self.load(Patient, patient_id)
        contract = self.load(Contract, patient.contract_id) if patient.contract_id else None
        team = self.load(CareTeam, contract.team_id) if contract else None
        # Whether this organisation acts for the patient, before anything about them is told.
        patient.ensure_cared_for_by(actor, team is not None and team.speaks_for(actor))
        if not patient.has_active_contract(when.date()) or contract is None or team is None:
            raise ContractNotActive("only a contracted patient is referred by a family doctor")
        hospital = self.load(Organisation, hospital_id)
        hospital.ensure_department(department)
        ended = self._resent(resends)
        referral = Referral.request(
            self.new_id(id),
            patient_id=patient.id,
            contract_id=contract.id,
            team_id=team.id,
            center_id=team.center_id,
            hospital_id=hospital.id,
            department=department,
            reason=reason,
            diagnosis=diagnosis,
            diagnoses=diagnoses,
            past_history=past_history,
            treatment=treatment,
            referring_doctor=referring_doctor,
            doctor_phone=doctor_phone,
            urgency=urgency,
            registered_poor=Tag.REGISTERED_POOR in patient.tags,
            actor=actor,
            at=when,
            team_speaks_for_actor=team.speaks_for(actor),
            zone=self.timezone,
            resends=ended,
        )
        if ended is None:
            followups = self._owe_follow_up(
                patient,
                reason=ObligationReason.AFTER_REFERRAL,
                source_id=referral.id,
                due=referral.follow_up_due,
                actor=actor,
                when=when,
            )
        else:
            followups = self._followups(patient, actor, when)
            followups.carry_on(
                ended.id, referral.id, when.date(), referral.follow_up_due, actor, when
            )
        return Outcome(referral.id, self.commit(referral, followups))

    def _resent(self, referral_id: UUID | None) -> Referral | None:
        """The referral a new one sends again, if it names one (absent reads as absent)."""
        if referral_id is None:
            return None
        try:
            return self.load(Referral, referral_id)
        except NotFound:
            raise ResentReferralNotFound(
                "no such referral of this patient from this center"
            ) from None

    def _end_loop(self, referral: Referral, reason: str, actor: Actor, when: datetime) -> Outcome:
        """A referral rejected or cancelled, and the follow-ups its loop still owed withdrawn
        with it, in one commit (a re-sent referral carries them on)."""
        try:
            followups: FollowUps | None = self.load(
                FollowUps, FollowUps.id_for(referral.patient_id)
            )
        except NotFound:
            followups = None
        if followups is not None:
            followups.end_loop(referral.id, reason, actor, when)
        return Outcome(referral.id, self.commit(referral, followups))

    def _referral_step(self, referral_id: UUID, step: Callable[[Referral], None]) -> Outcome:
        referral = self.load(Referral, referral_id)
        step(referral)
        return Outcome(referral.id, self.commit(referral))

    def _speaks(self, referral: Referral, actor: Actor) -> bool:
        if referral.team_id is None:
            return False
        return self.load(CareTeam, referral.team_id).speaks_for(actor)

    @use_case
    def accept_referral(
        self, referral_id: UUID, *, actor: Actor, note: str = "", at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.accept(actor, when, note))

    @use_case
    def reject_referral(
        self,
        referral_id: UUID,
        *,
        reason_code: str,
        actor: Actor,
        note: str = "",
        at: datetime | None = None,
    ) -> Outcome:
        when = self.when(at)
        referral = self.load(Referral, referral_id)
        referral.reject(reason_code, note, actor, when)
        return self._end_loop(referral, "referral rejected", actor, when)

    @use_case
    def cancel_referral(
        self, referral_id: UUID, *, reason: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        referral = self.load(Referral, referral_id)
        referral.cancel(reason, actor, when, self._speaks(referral, actor))
        return self._end_loop(referral, "referral cancelled", actor, when)

    @use_case
    def record_arrival(
        self, referral_id: UUID, *, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.arrive(actor, when))

    @use_case
    def record_admission(
        self, referral_id: UUID, *, ward: str, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(referral_id, lambda r: r.admit(ward, actor, when))

    @use_case
    def return_to_community(
        self,
        referral_id: UUID,
        *,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        at: datetime | None = None,
        diagnoses: Sequence[Mapping[str, Any]] = (),
        inpatient_number: str = "",
        key_results: str = "",
        next_plan: str = "",
    ) -> Outcome:
        """Discharge back to the community with the return form (回转单)."""
        when = self.when(at)
        referral = self.load(Referral, referral_id)
        referral.return_to_community(
            summary,
            prescriptions,
            rehabilitation,
            follow_up_due,
            actor,
            when,
            diagnoses=diagnoses,
            inpatient_number=inpatient_number,
            key_results=key_results,
            next_plan=next_plan,
        )
        patient = self.load(Patient, referral.patient_id)
        followups = self._owe_follow_up(
            patient,
            reason=ObligationReason.RETURN_TO_COMMUNITY,
            source_id=referral.id,
            due=follow_up_due,
            actor=actor,
            when=when,
        )
        return Outcome(referral.id, self.commit(referral, followups))

    @use_case
    def start_return(
        self,
        patient_id: UUID,
        *,
        national_id: str,
        name: str,
        hospital_id: UUID,
        department: str,
        summary: str,
        prescriptions: list[dict[str, Any]],
        rehabilitation: str,
        follow_up_due: date,
        actor: Actor,
        id: UUID | None = None,
        at: datetime | None = None,
        diagnoses: Sequence[Mapping[str, Any]] = (),
        inpatient_number: str = "",
        key_results: str = "",
        next_plan: str = "",
    ) -> Outcome:
        """A hospital returns a patient it treated without an upward referral. It names the
        patient as the encounter did (resident id number and name); a patient they do not
        identify is answered as an unknown one."""
        when = self.when(at)
        if actor.org_id != hospital_id:
            raise NotPermitted("a hospital starts returns only for its own patients")
        patient = self.load(Patient, patient_id)
        patient.ensure_identified_by(national_id, name)
        hospital = self.load(Organisation, hospital_id)
        hospital.ensure_department(department)
        referral = Referral.start_return(
            self.new_id(id),
            patient_id=patient.id,
            center_id=patient.center_id,
            hospital_id=hospital.id,
            department=department,
            summary=summary,
            prescriptions=prescriptions,
            rehabilitation=rehabilitation,
            follow_up_due=follow_up_due,
            actor=actor,
            at=when,
            diagnoses=diagnoses,
            inpatient_number=inpatient_number,
            key_results=key_results,
            next_plan=next_plan,
        )
        followups = self._owe_follow_up(
            patient,
            reason=ObligationReason.RETURN_TO_COMMUNITY,
            source_id=referral.id,
            due=follow_up_due,
            actor=actor,
            when=when,
        )
        return Outcome(referral.id, self.commit(referral, followups))

    @use_case
    def acknowledge_return(
        self, referral_id: UUID, *, actor: Actor, at: datetime | None = None
    ) -> Outcome:
        when = self.when(at)
        return self._referral_step(
            referral_id,
            lambda r: r.acknowledge_return(actor, when, self._speaks(r, actor)),
        )

    # --- follow-ups ------------------------------------------------------------------------

    @use_case
    def record_follow_up(
        self,
        patient_id: UUID,
        *,
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
        """Record a visit; it fulfils the obligations of the loop it belongs to
        (:meth:`FollowUps.record_visit`). A referral whose loop owes nothing more then records
        that it was followed up (``Referral.FollowedUp``): its loop is closed exactly when its
        obligations are done."""
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
        referrals: list[Referral] = []
        loops = dict.fromkeys(
            followups.obligations[k]["source_id"]
            for k in fulfilled
            if followups.obligations[k]["reason"] in LOOP_REASONS
        )
        for source_id in loops:
            if followups.open_of(source_id):
                continue
            referral = self.load(Referral, source_id)
            referral.record_follow_up(
                visit_id, on, actor, when, patient_center_id=followups.center_id
            )
            referrals.append(referral)
        return Outcome(visit_id, self.commit(followups, *referrals))

    # --- quotas ----------------------------------------------------------------------------

    @use_case
    def publish_quota(
        self,
        hospital_id: UUID,
        *,
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
        quota = Quota.publish(
            self.new_id(id),
            hospital_id=hospital.id,
            kind=kind,
            department=department,
            session_date=session_date,
            slots=slots,
            release_at=release_at,
            actor=actor,
            at=self.when(at),
            **options,
        )
        hospital.ensure_department(department)
        return Outcome(quota.id, self.commit(quota))

    @use_case
    def book_slot(
        self,
        quota_id: UUID,
        *,
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
        team_id = None
        centers = {patient.center_id}
        if patient.contract_id is not None:
            contract = self.load(Contract, patient.contract_id)
            team_id, centers = contract.team_id, centers | {contract.center_id}
        booking_id = id or uuid4()
        quota.book(
            booking_id,
            patient_id=patient.id,
            referral_id=referral_id,
            actor=actor,
            actor_district=center.district,
            at=when,
            team_id=team_id,
            booker_is_center=center.is_center,
            recorded=self.now(),
            patient_centers=frozenset(centers),
        )
        if referral_id is not None:
            referral = self.load(Referral, referral_id)
            if referral.patient_id != patient.id:
                # another patient's referral reads as absent, as a foreign one does
                raise NotFound("no such referral of this patient", kind="Referral")
        return Outcome(booking_id, self.commit(quota))

    @use_case
    def cancel_booking(
        self,
        quota_id: UUID,
        *,
        booking_id: UUID,
        reason: str,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.cancel_booking(booking_id, reason, actor, self.when(at), recorded=self.now())
        return Outcome(booking_id, self.commit(quota))

    @use_case
    def release_quota(self, quota_id: UUID, *, actor: Actor, at: datetime | None = None) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.release(actor, self.when(at))
        return Outcome(quota.id, self.commit(quota))

    @use_case
    def record_attendance(
        self,
        quota_id: UUID,
        *,
        booking_id: UUID,
        attended: bool,
        actor: Actor,
        at: datetime | None = None,
    ) -> Outcome:
        quota = self.load(Quota, quota_id)
        quota.record_attendance(booking_id, attended, actor, self.when(at))
        return Outcome(booking_id, self.commit(quota))
