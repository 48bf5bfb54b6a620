"""Organisations: community health centers and hospitals, with departments and wards."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.common import Actor, DomainError, InvalidValue, NotFound, NotPermitted


class OrgKind(StrEnum):
    COMMUNITY_CENTER = "community_center"
    HOSPITAL = "hospital"


class NotAHospital(DomainError):
    """Departments, wards and quotas belong to hospitals only."""

    code = "not-a-hospital"


class NotACommunityCenter(DomainError):
    """Teams, contracts and resident counts belong to community centers only."""

    code = "not-a-community-center"


class UnknownDepartment(NotFound):
    """The hospital has no such department."""

    code = "unknown-department"


class DepartmentExists(DomainError):
    """A hospital has each department code once."""

    code = "department-exists"


class Organisation(Aggregate):
    """A community health center (社区卫生服务中心) or a 2nd/3rd-level hospital."""

    @event("Registered")
    def __init__(
        self,
        id: UUID,
        kind: str,
        name: str,
        district: str,
        level: int | None,
        actor: Actor,
        at: datetime,
    ) -> None:
        self.kind = kind
        self.name = name
        self.district = district
        self.level = level
        self.departments: dict[str, dict[str, Any]] = {}
        self.residents: dict[str, int] = {"total": 0, "key_population": 0}

    @classmethod
    def register(
        cls,
        id: UUID,
        *,
        kind: str,
        name: str,
        district: str,
        actor: Actor,
        at: datetime,
        level: int | None = None,
    ) -> Organisation:
        if kind not in set(OrgKind):
            raise InvalidValue(f"unknown organisation kind {kind!r}", field="kind")
        if not name.strip():
            raise InvalidValue("an organisation needs a name", field="name")
        if not district.strip():
            raise InvalidValue("an organisation needs a district", field="district")
        if kind == OrgKind.HOSPITAL and level not in (2, 3):
            raise InvalidValue("a hospital is 2nd or 3rd level", field="level")
        return cls(
            id=id,
            kind=kind,
            name=name.strip(),
            district=district.strip(),
            level=level,
            actor=actor,
            at=at,
        )

    @property
    def is_hospital(self) -> bool:
        return self.kind == OrgKind.HOSPITAL

    @property
    def is_center(self) -> bool:
        return self.kind == OrgKind.COMMUNITY_CENTER

    def add_department(
        self, code: str, name: str, referral_contact: str | None, actor: Actor, at: datetime
    ) -> None:
        """A hospital opens a department that accepts referrals (with its contact person)."""
        self._ensure_own(actor)
        if not self.is_hospital:
            raise NotAHospital("only hospitals have departments", org_id=str(self.id))
        if not code.strip():
            raise InvalidValue("a department needs a code", field="code")
        if code in self.departments:
            raise DepartmentExists(f"department {code!r} already exists", department=code)
        self._department_added(
            code=code, name=name, referral_contact=referral_contact, actor=actor, at=at
        )

    @event("DepartmentAdded")
    def _department_added(
        self, code: str, name: str, referral_contact: str | None, actor: Actor, at: datetime
    ) -> None:
        self.departments[code] = {"name": name, "referral_contact": referral_contact}

    def ensure_department(self, code: str) -> None:
        if not self.is_hospital:
            raise NotAHospital("referrals and quotas go to hospitals", org_id=str(self.id))
        if code not in self.departments:
            raise UnknownDepartment(
                f"hospital {self.name} has no department {code!r}", department=code
            )

    def record_residents(
        self, total: int, key_population: int, as_of: date, actor: Actor, at: datetime
    ) -> None:
        """A center records its registered residents (the denominators of signing rates)."""
        self._ensure_own(actor)
        if not self.is_center:
            raise NotACommunityCenter("only community centers record residents")
        if total < 0:
            raise InvalidValue("the number of residents is at least 0", field="total")
        if not 0 <= key_population <= total:
            raise InvalidValue(
                f"the key population ({key_population}) is between 0 and the total ({total})",
                field="key_population",
            )
        self._residents_recorded(
            total=total, key_population=key_population, as_of=as_of, actor=actor, at=at
        )

    @event("ResidentsRecorded")
    def _residents_recorded(
        self, total: int, key_population: int, as_of: date, actor: Actor, at: datetime
    ) -> None:
        self.residents = {"total": total, "key_population": key_population}

    def _ensure_own(self, actor: Actor) -> None:
        if actor.org_id != self.id:
            raise NotPermitted("an organisation changes only its own record")
