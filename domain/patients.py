"""Patients: the resident registry, key-population tags, moving away, the contract slot."""

from __future__ import annotations

import re
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import (
    ADMINISTRATION,
    Actor,
    DomainError,
    InvalidValue,
    NotFound,
    NotPermitted,
    add_years,
    ensure_not_before,
)


class Tag(StrEnum):
    """Key populations (重点人群) recorded on a patient."""

    PREGNANT_POSTPARTUM = "pregnant_postpartum"
    DISABILITY = "disability"
    REGISTERED_POOR = "registered_poor"
    FAMILY_PLANNING_SPECIAL = "family_planning_special"
    HYPERTENSION = "hypertension"
    TYPE2_DIABETES = "type2_diabetes"
    TUBERCULOSIS = "tuberculosis"
    SEVERE_MENTAL_DISORDER = "severe_mental_disorder"


class DerivedTag(StrEnum):
    """Key populations derived from the birth date on a given day."""

    AGED_65_PLUS = "aged_65_plus"
    CHILD_0_6 = "child_0_6"


def age_on(born: date | None, day: date) -> int:
    """Completed years on ``day`` of someone born on ``born`` (born on 29 February: birthdays
    on the 28th in other years); -1 when the birth date is unknown (erased)."""
    if born is None:
        return -1
    years = day.year - born.year
    return years - 1 if day < add_years(born, years) else years


def derived_key_populations(born: date | None, on: date) -> set[str]:
    """The key populations a birth date puts someone in on a day: 65 and over, children 0-6.
    Nothing records them: they change with the calendar (a 65th birthday), not with events."""
    age = age_on(born, on)
    found: set[str] = set()
    if age >= 65:
        found.add(DerivedTag.AGED_65_PLUS)
    if 0 <= age <= 6:
        found.add(DerivedTag.CHILD_0_6)
    return found


CHRONIC_TAGS = frozenset(
    {Tag.HYPERTENSION, Tag.TYPE2_DIABETES, Tag.TUBERCULOSIS, Tag.SEVERE_MENTAL_DISORDER}
)

_NATIONAL_ID = re.compile(r"^\d{17}[\dX]$")
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def valid_national_id(number: str) -> bool:
    """GB 11643 resident identity number: 17 digits and an ISO 7064 MOD 11-2 check character."""
    if not _NATIONAL_ID.match(number):
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _WEIGHTS, strict=True))
    return _CHECK[total % 11] == number[17]


class ContractAlreadyActive(DomainError):
    """A patient has at most one active contract at any moment."""

    code = "contract-already-active"


class PatientMovedAway(DomainError):
    """A patient who moved out of the area cannot sign a new contract (nor move away twice)."""

    code = "patient-moved-away"


class NotCurrentContract(DomainError):
    """Only the patient's current contract can be extended."""

    code = "not-current-contract"


class AlreadyAtThisCenter(DomainError):
    """A transfer moves a patient to another center; within one center a team change does."""

    code = "already-at-this-center"


class TransferAlreadyRequested(DomainError):
    """A patient has at most one transfer request pending."""

    code = "transfer-already-requested"


class NoTransferRequested(DomainError):
    """Releasing or declining needs a pending transfer request."""

    code = "no-transfer-requested"


class TransferRequired(DomainError):
    """A patient moves to another center only by a transfer the new center requests and the
    current one releases (or at once, when there is no active contract to release)."""

    code = "transfer-required"


class NotThisPatient(NotFound):
    """The national id and name given do not identify the patient: answered as if absent."""

    code = "patient-not-identified"


class PatientErased(NotFound):
    """An erased patient is gone: every step about them answers as for an unknown patient."""

    code = "patient-erased"


class Patient(Aggregate):
    """A resident in the registry. Their personal data (``domain.personal``) is stored
    encrypted with a key of their own, destroyed when they are erased."""

    @event("Registered")
    def __init__(
        self,
        id: UUID,
        name: str,
        sex: str,
        birth_date: date,
        national_id: str,
        phone: str,
        district: str,
        center_id: UUID,
        actor: Actor,
        at: datetime,
        birth_month: str | None = None,
    ) -> None:
        self.name = name
        self.sex = sex
        self.birth_date: date | None = birth_date
        #: ``YYYY-MM``: the age bands the KPIs count, which outlive an erasure (events stored
        #: before it existed have none; the views then read the birth date).
        self.birth_month = birth_month
        self.erased = False
        self.national_id = national_id
        self.phone = phone
        self.district = district
        self.center_id = center_id
        self.tags: set[str] = set()
        self.moved_away = False
        self.contract_id: UUID | None = None
        self.contract_until: date | None = None
        #: A pending move to another center: center_id, team_id, consent (and, once the
        #: current center released it, released=True until the move is recorded).
        self.transfer_request: dict[str, Any] | None = None
        #: When the pending transfer was requested: releasing, declining or withdrawing it
        #: comes after.
        self.transfer_requested_at: datetime | None = None

    @classmethod
    def register(
        cls,
        id: UUID,
        *,
        name: str,
        sex: str,
        birth_date: date,
        national_id: str,
        phone: str,
        district: str,
        center_id: UUID,
        actor: Actor,
        at: datetime,
    ) -> Patient:
        """A resident joins the registry of their community center (the center registers)."""
        if actor.org_id != center_id:
            raise NotPermitted("patients are registered by their own community center")
        if not name.strip():
            raise InvalidValue("a patient needs a name", field="name")
        if sex not in ("F", "M"):
            raise InvalidValue("sex is 'F' or 'M'", field="sex")
        if birth_date > at.date():
            raise InvalidValue("birth date is in the future", field="birth_date")
        if not valid_national_id(national_id):
            raise InvalidValue(
                "national id number is not a valid 18-character resident id", field="national_id"
            )
        return cls(
            id=id,
            name=name.strip(),
            sex=sex,
            birth_date=birth_date,
            national_id=national_id,
            phone=phone,
            district=district,
            center_id=center_id,
            actor=actor,
            at=at,
            birth_month=birth_date.strftime("%Y-%m"),
        )

    # --- erasure --------------------------------------------------------------------------

    def erase(self, reason: str, actor: Actor, at: datetime) -> None:
        """Erase the patient (an administrator, citing the legal ground: the end of a retention
        period, a record made in error). The event store then destroys the patient's data key;
        the facts without them (a contract, a referral, a visit) stay, anonymous."""
        if actor.org_id != ADMINISTRATION:
            raise NotPermitted("patients are erased by an administrator")
        self._ensure_present()
        if not reason.strip():
            raise InvalidValue("an erasure records its legal ground", field="reason")
        self._erased(reason=reason.strip(), actor=actor, at=at)

    @event("Erased")
    def _erased(self, reason: str, actor: Actor, at: datetime) -> None:
        self.erased = True
        self.name = self.national_id = self.phone = ""
        self.birth_date = None
        self.transfer_request = None

    def _ensure_present(self) -> None:
        if self.erased:
            raise PatientErased("the patient is erased")

    # --- key populations ----------------------------------------------------------------

    def tag(self, tag: str, actor: Actor, at: datetime) -> None:
        self._ensure_center(actor)
        if tag not in set(Tag):
            raise InvalidValue(f"unknown key-population tag {tag!r}", field="tag")
        if tag not in self.tags:
            self._tagged(tag=tag, actor=actor, at=at)

    @event("Tagged")
    def _tagged(self, tag: str, actor: Actor, at: datetime) -> None:
        self.tags.add(tag)

    def untag(self, tag: str, actor: Actor, at: datetime) -> None:
        self._ensure_center(actor)
        if tag in self.tags:
            self._untagged(tag=tag, actor=actor, at=at)

    @event("Untagged")
    def _untagged(self, tag: str, actor: Actor, at: datetime) -> None:
        self.tags.discard(tag)

    def age_on(self, day: date) -> int:
        """Completed years on ``day`` (someone born on 29 February has birthdays on the 28th);
        -1 once erased (no birth date)."""
        return age_on(self.birth_date, day)

    def key_populations(self, on: date) -> set[str]:
        """Recorded tags plus those derived from the birth date on ``on``."""
        return set(self.tags) | derived_key_populations(self.birth_date, on)

    # --- residence ----------------------------------------------------------------------

    def move_away(self, destination: str, actor: Actor, at: datetime) -> None:
        """Moving out of the area (a TB patient's move is reported upward)."""
        self._ensure_center(actor)
        if self.moved_away:
            raise PatientMovedAway("the patient has already moved out of the area")
        self._moved_away(destination=destination, actor=actor, at=at)

    @event("MovedAway")
    def _moved_away(self, destination: str, actor: Actor, at: datetime) -> None:
        self.moved_away = True

    # --- transfers between centers: the new center asks, the current one releases --------

    def request_transfer(
        self,
        *,
        center_id: UUID,
        team_id: UUID,
        consent: str,
        district: str,
        actor: Actor,
        at: datetime,
    ) -> bool:
        """Another center (``center_id``, its team ``team_id``, in ``district``) asks to care
        for the patient, citing the patient's recorded consent (e.g. the signed form's number).

        With an active contract the current center must release it (:meth:`release_transfer`);
        without one (or after moving away) there is nothing to hand over and the patient's
        registry moves at once. Returns whether the patient moved.
        """
        if actor.org_id != center_id:
            raise NotPermitted("a transfer is requested by the center that will care")
        self._ensure_present()
        if center_id == self.center_id:
            raise AlreadyAtThisCenter("the patient is cared for at that center already")
        if self.transfer_request is not None:
            raise TransferAlreadyRequested("a transfer of this patient is already requested")
        if not consent.strip():
            raise InvalidValue("a transfer cites the patient's recorded consent", field="consent")
        self._transfer_requested(
            center_id=center_id, team_id=team_id, consent=consent.strip(), actor=actor, at=at
        )
        if self.moved_away or not self.has_active_contract(at.date()):
            self._transferred(center_id=center_id, district=district, actor=actor, at=at)
            return True
        return False

    @event("TransferRequested")
    def _transfer_requested(
        self, center_id: UUID, team_id: UUID, consent: str, actor: Actor, at: datetime
    ) -> None:
        self.transfer_request = {"center_id": center_id, "team_id": team_id, "consent": consent}
        self.transfer_requested_at = at

    def release_transfer(self, actor: Actor, at: datetime) -> dict[str, Any]:
        """The current center lets the patient go to the requesting center; the request
        (center_id, team_id, consent) is returned: the contract and follow-ups move with it,
        then :meth:`transfer` records the move."""
        request = self._pending_for_current_center(actor)
        self._ensure_after_request("release of the transfer", at)
        self._transfer_released(
            center_id=request["center_id"], team_id=request["team_id"], actor=actor, at=at
        )
        return dict(request)

    @event("TransferReleased")
    def _transfer_released(
        self, center_id: UUID, team_id: UUID, actor: Actor, at: datetime
    ) -> None:
        assert self.transfer_request is not None
        self.transfer_request["released"] = True

    def decline_transfer(self, reason: str, actor: Actor, at: datetime) -> None:
        """The current center declines the request (the patient stays)."""
        request = self._pending_for_current_center(actor)
        if not reason.strip():
            raise InvalidValue("declining a transfer needs a reason", field="reason")
        self._ensure_after_request("decline of the transfer", at)
        self._transfer_declined(
            center_id=request["center_id"], reason=reason.strip(), actor=actor, at=at
        )

    @event("TransferDeclined")
    def _transfer_declined(self, center_id: UUID, reason: str, actor: Actor, at: datetime) -> None:
        self.transfer_request = None

    def withdraw_transfer(self, actor: Actor, at: datetime) -> None:
        """The requesting center withdraws its request. Nobody else may, and without a
        request pending there is nothing of the patient's this center may act on."""
        self._ensure_present()
        request = self.transfer_request
        if request is None or request["center_id"] != actor.org_id:
            raise NotPermitted("only the requesting center withdraws its transfer request")
        self._ensure_after_request("withdrawal of the transfer", at)
        self._transfer_withdrawn(center_id=request["center_id"], actor=actor, at=at)

    @event("TransferWithdrawn")
    def _transfer_withdrawn(self, center_id: UUID, actor: Actor, at: datetime) -> None:
        self.transfer_request = None

    def _ensure_after_request(self, step: str, at: datetime) -> None:
        if self.transfer_requested_at is not None:
            ensure_not_before(at, self.transfer_requested_at, step, "transfer request")

    def _pending_for_current_center(self, actor: Actor) -> dict[str, Any]:
        self._ensure_center(actor)
        if self.transfer_request is None:
            raise NoTransferRequested("no transfer of this patient is requested")
        return self.transfer_request

    def transfer(self, center_id: UUID, district: str, actor: Actor, at: datetime) -> None:
        """The patient's care moves to the center whose transfer request was released."""
        self._ensure_present()
        request = self.transfer_request
        if request is None or not request.get("released") or request["center_id"] != center_id:
            raise TransferRequired("a patient moves to another center by a released transfer")
        self._transferred(center_id=center_id, district=district, actor=actor, at=at)

    @event("Transferred")
    def _transferred(self, center_id: UUID, district: str, actor: Actor, at: datetime) -> None:
        self.center_id = center_id
        self.district = district
        self.transfer_request = None
        # A patient who had moved away and comes back joins the new center's registry.
        self.moved_away = False

    # --- who may act on the patient -------------------------------------------------------

    def ensure_center(self, actor: Actor) -> None:
        """Only the patient's community center may take this step."""
        self._ensure_center(actor)

    def ensure_cared_for_by(self, actor: Actor, team_speaks_for_actor: bool = False) -> None:
        """The patient's center, or (``team_speaks_for_actor``) their contracted team's
        member, acts for the patient; anyone else is told nothing about them."""
        self._ensure_present()
        if actor.org_id != self.center_id and not team_speaks_for_actor:
            raise NotPermitted("only the patient's center or contracted team acts for them")

    def ensure_identified_by(self, national_id: str, name: str) -> None:
        """A hospital names a patient as an encounter does: resident id number and name.
        A mismatch answers as an unknown patient does."""
        self._ensure_present()
        if national_id.strip().upper() != self.national_id or name.strip() != self.name:
            raise NotThisPatient("no patient with that national id and name")

    def _ensure_center(self, actor: Actor) -> None:
        self._ensure_present()
        if actor.org_id != self.center_id:
            raise NotPermitted("only the patient's community center changes the registry")

    # --- the contract slot: one active contract at any moment ---------------------------

    def has_active_contract(self, on: date) -> bool:
        return (
            self.contract_id is not None
            and self.contract_until is not None
            and self.contract_until >= on
        )

    def take_contract(
        self,
        contract_id: UUID,
        start: date,
        until: date,
        actor: Actor,
        at: datetime,
        center_id: UUID | None = None,
    ) -> None:
        """Hold the patient's one contract slot for ``contract_id`` (of a team of ``center_id``).

        A patient signs with a team of their own community center; moving to another
        center's team goes through a team change, which moves the patient's care with it.
        """
        if center_id is not None and center_id != self.center_id:
            raise NotPermitted("a patient signs with a team of their own community center")
        self._ensure_present()
        if self.moved_away:
            raise PatientMovedAway("the patient has moved out of the area")
        if self.has_active_contract(start):
            raise ContractAlreadyActive(
                f"the patient already has an active contract until {self.contract_until}",
                contract_id=str(self.contract_id),
            )
        self._contract_taken(contract_id=contract_id, until=until, actor=actor, at=at)

    @event("ContractTaken")
    def _contract_taken(self, contract_id: UUID, until: date, actor: Actor, at: datetime) -> None:
        self.contract_id = contract_id
        self.contract_until = until

    def extend_contract(self, contract_id: UUID, until: date, actor: Actor, at: datetime) -> None:
        if contract_id != self.contract_id:
            raise NotCurrentContract(
                "not the patient's current contract", contract_id=str(contract_id)
            )
        self._contract_extended(contract_id=contract_id, until=until, actor=actor, at=at)

    @event("ContractExtended")
    def _contract_extended(
        self, contract_id: UUID, until: date, actor: Actor, at: datetime
    ) -> None:
        self.contract_until = until

    def release_contract(self, contract_id: UUID, actor: Actor, at: datetime) -> None:
        if contract_id == self.contract_id:
            self._contract_released(contract_id=contract_id, actor=actor, at=at)

    @event("ContractReleased")
    def _contract_released(self, contract_id: UUID, actor: Actor, at: datetime) -> None:
        self.contract_id = None
        self.contract_until = None
