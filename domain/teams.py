"""Family-doctor teams (家庭医生团队) of a community center, with members over time."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import Actor, DomainError, InvalidValue, NotPermitted


class Role(StrEnum):
    GENERAL_PRACTITIONER = "general_practitioner"
    NURSE = "nurse"
    PUBLIC_HEALTH_DOCTOR = "public_health_doctor"
    SPECIALIST = "specialist"


class TeamCannotTakeContracts(DomainError):
    """A team takes contracts only while it has a general practitioner."""

    code = "team-has-no-general-practitioner"


class SpecialistMustComeFromHospital(DomainError):
    """A specialist member is seconded from a hospital."""

    code = "specialist-not-from-hospital"


class AlreadyMember(DomainError):
    """The person is already a member of the team."""

    code = "already-a-member"


class NotAMember(DomainError):
    """The person is not a current member of the team."""

    code = "not-a-member"


class CareTeam(Aggregate):
    """A family-doctor team: 1-2 GPs, a nurse, a public-health doctor, specialists (1+3+N)."""

    @event("Formed")
    def __init__(self, id: UUID, center_id: UUID, name: str, actor: Actor, at: datetime) -> None:
        self.center_id = center_id
        self.name = name
        self.members: dict[str, dict[str, str]] = {}

    @classmethod
    def form(cls, id: UUID, *, center_id: UUID, name: str, actor: Actor, at: datetime) -> CareTeam:
        if actor.org_id != center_id:
            raise NotPermitted("a team is formed by its own community center")
        if not name.strip():
            raise InvalidValue("a team needs a name", field="name")
        return cls(id=id, center_id=center_id, name=name.strip(), actor=actor, at=at)

    def add_member(
        self,
        staff_id: str,
        name: str,
        role: str,
        org_id: UUID,
        org_is_hospital: bool,
        actor: Actor,
        at: datetime,
    ) -> None:
        """A person joins; a specialist comes from a hospital, everyone else from the center."""
        self._ensure_center(actor)
        if role not in set(Role):
            raise InvalidValue(f"unknown role {role!r}", field="role")
        if staff_id in self.members:
            raise AlreadyMember(f"{staff_id} is already in team {self.name}")
        if role == Role.SPECIALIST and not org_is_hospital:
            raise SpecialistMustComeFromHospital("a specialist member must come from a hospital")
        if role != Role.SPECIALIST and org_id != self.center_id:
            raise InvalidValue("only specialists join from another organisation", field="org_id")
        self._member_joined(
            staff_id=staff_id, name=name, role=role, org_id=org_id, actor=actor, at=at
        )

    @event("MemberJoined")
    def _member_joined(
        self, staff_id: str, name: str, role: str, org_id: UUID, actor: Actor, at: datetime
    ) -> None:
        self.members[staff_id] = {"name": name, "role": role, "org_id": org_id.hex}

    def remove_member(self, staff_id: str, actor: Actor, at: datetime) -> None:
        self._ensure_center(actor)
        if staff_id not in self.members:
            raise NotAMember(f"{staff_id} is not a member of team {self.name}")
        self._member_left(staff_id=staff_id, actor=actor, at=at)

    @event("MemberLeft")
    def _member_left(self, staff_id: str, actor: Actor, at: datetime) -> None:
        del self.members[staff_id]

    @property
    def can_take_contracts(self) -> bool:
        return any(m["role"] == Role.GENERAL_PRACTITIONER for m in self.members.values())

    def ensure_can_take_contracts(self) -> None:
        if not self.can_take_contracts:
            raise TeamCannotTakeContracts(f"team {self.name} has no general practitioner")

    def speaks_for(self, actor: Actor) -> bool:
        """The team's center, or a current member, acts for the team."""
        if actor.org_id == self.center_id:
            return True
        member = self.members.get(actor.staff_id)
        return member is not None and member["org_id"] == actor.org_id.hex

    def _ensure_center(self, actor: Actor) -> None:
        if actor.org_id != self.center_id:
            raise NotPermitted("only the team's community center changes its members")
