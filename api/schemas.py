"""Request and response bodies. Values are checked here and handed to the domain as its own
types (dates, UUIDs, enum values); the domain's rules still decide."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from domain.contracts import PACKAGES
from domain.followups import MEASUREMENTS, RiskLevel, VisitKind
from domain.organisations import OrgKind
from domain.patients import Tag
from domain.quotas import HalfDay, QuotaKind
from domain.referrals import RejectionReason, Urgency
from domain.teams import Role as TeamRole
from domain.text import unwanted_reason

# Dates the domain can compute with (terms add years): keep them well inside date's range.
Day = Annotated[date, Field(ge=date(1900, 1, 1), le=date(2200, 12, 31))]
# Moments likewise (in UTC, 0001-01-01T00:30:00+01:00 is not a datetime at all).
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
Moment = Annotated[
    AwareDatetime,
    Field(
        ge=EARLIEST,
        le=LATEST,
        description="timezone-aware ISO 8601, 1900-01-01 .. 2200-01-01",
    ),
]


def _clean(value: str) -> str:
    """Refuse control characters (``domain.text``): a 422 naming the field and the character."""
    reason = unwanted_reason(value)
    if reason is not None:
        raise PydanticCustomError("control_character", reason)
    return value


#: Every text the API takes (bodies, query and path parameters) is a ``CleanText`` or built on
#: it: no control characters other than tab, line feed and carriage return, no lone
#: surrogates. ``tests/unit/test_text_hygiene.py`` walks every route so no field escapes it.
Clean = AfterValidator(_clean)
CleanText = Annotated[str, Clean]
Text = Annotated[str, Field(min_length=1, max_length=200), Clean]
LongText = Annotated[str, Field(max_length=4000), Clean]
NationalId = Annotated[str, Field(pattern=r"^\d{17}[\dX]$"), Clean]
Package = Literal[PACKAGES]  # type: ignore[valid-type]
Measurement = Annotated[
    str, Field(max_length=32, description="one of: " + ", ".join(MEASUREMENTS)), Clean
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

EXAMPLE_ID = "0b6f1c8e-5d2a-4c1e-9a37-2f5e8d9b4a10"
CENTER_ID = "7d3e0f5a-9b1c-4d2e-8f6a-1c2b3d4e5f60"
HOSPITAL_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
PATIENT_ID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"
TEAM_ID = "9c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"


class Command(BaseModel):
    """Every command may be back-dated with ``at`` (when it happened); never in the future."""

    model_config = ConfigDict(extra="forbid")

    at: Moment | None = Field(
        default=None,
        description="when the step happened (default: now)",
        examples=["2026-05-20T09:30:00+08:00"],
    )


def _example(**values: Any) -> ConfigDict:
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [values]})


# --- answers ----------------------------------------------------------------------------------


class CommandResult(BaseModel):
    """The aggregate the command created or changed, and the log position it reached."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": EXAMPLE_ID, "position": 4182}]}
    )

    id: UUID
    position: int = Field(description="pass as wait_for_position to read your own write")


class HouseholdResult(CommandResult):
    contracts: list[UUID]


class SearchPatients(BaseModel):
    """A patient search. The term is personal data (a name, a resident id number): it travels
    in the body, never in a URL, so it stays out of access logs and browser history."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"q": "秀英"}]})

    q: CleanText = Field(
        min_length=2,
        max_length=100,
        description="an exact id or national id, or at least two characters of a name "
        "(taken literally: % and _ are no wildcards)",
    )


class ItemsPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": [{"id": EXAMPLE_ID}], "limit": 50, "offset": 0, "next_offset": None}
            ]
        }
    )

    items: list[dict[str, Any]]
    limit: int
    offset: int
    next_offset: int | None


# --- organisations ----------------------------------------------------------------------------


class RegisterOrganisation(Command):
    model_config = _example(kind="hospital", name="鼓楼医院", district="鼓楼区", level=3)

    kind: OrgKind
    name: Text
    district: Text
    level: Literal[2, 3] | None = Field(default=None, description="hospitals: 2nd or 3rd level")
    id: UUID | None = None


class AddDepartment(Command):
    model_config = _example(code="cardiology", name="心内科", referral_contact="李护士长")

    code: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_\-]+$"), Clean]
    name: Text
    referral_contact: Text | None = None


class RecordResidents(Command):
    model_config = _example(total=52000, key_population=15600, as_of="2026-01-01")

    total: Annotated[int, Field(ge=0, le=100_000_000)]
    key_population: Annotated[int, Field(ge=0, le=100_000_000)]
    as_of: Day


# --- teams --------------------------------------------------------------------------------------


class FormTeam(Command):
    model_config = _example(name="家庭医生团队一")

    name: Text
    id: UUID | None = None


class AddMember(Command):
    model_config = _example(staff_id="gp-0042", name="李医生", role="general_practitioner")

    staff_id: Text
    name: Text
    role: TeamRole
    org_id: UUID | None = Field(
        default=None, description="the member's employer (default: your organisation)"
    )


class RemoveMember(Command):
    model_config = _example()


# --- patients -------------------------------------------------------------------------------


class RegisterPatient(Command):
    model_config = _example(
        name="王秀英",
        sex="F",
        birth_date="1950-03-04",
        national_id="320106195003041236",
        phone="13800000000",
        tags=["hypertension"],
    )

    name: Text
    sex: Literal["F", "M"]
    birth_date: Day
    national_id: NationalId
    phone: Annotated[str, Field(max_length=32), Clean]
    tags: list[Tag] = Field(default_factory=list, max_length=len(Tag))
    id: UUID | None = None


class TagPatient(Command):
    model_config = _example(tag="type2_diabetes", present=True)

    tag: Tag
    present: bool = True


class ErasePatient(BaseModel):
    """Erase a patient (administrators): the legal ground is recorded; it happens now."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"reason": "保存期限届满（个人信息保护法第四十七条）"}]},
    )

    reason: Text


class MoveAway(Command):
    model_config = _example(destination="上海市")

    destination: Text


class RecordFollowUp(Command):
    model_config = _example(
        on="2026-05-20",
        kind="face_to_face",
        measurements={"systolic_bp": 138, "diastolic_bp": 86},
        note="血压控制可",
    )

    on: Day
    kind: VisitKind
    measurements: dict[Measurement, FiniteFloat] = Field(default_factory=dict)
    risk_level: RiskLevel | None = None
    note: LongText = ""
    obligation_id: UUID | None = None
    id: UUID | None = None

    #: the domain's name for a value -> this request's field (api/fields.py)
    DOMAIN_FIELDS: ClassVar[dict[str, str]] = {"visit_id": "id"}


class RequestTransfer(Command):
    """The resident is named as they came to the new center: resident id number and name."""

    model_config = _example(
        national_id="320106195003041236",
        name="王秀英",
        team_id=TEAM_ID,
        consent="转签同意书 2026-0042",
    )

    national_id: NationalId
    name: Text
    team_id: UUID = Field(description="the team of your center that will take the patient")
    consent: Text = Field(description="reference to the patient's recorded consent")


class ReleaseTransfer(Command):
    model_config = _example()


class DeclineTransfer(Command):
    model_config = _example(reason="患者仍在本中心随访治疗中")

    reason: Text


class WithdrawTransfer(Command):
    model_config = _example()


# --- contracts ------------------------------------------------------------------------------


class SignContract(Command):
    model_config = _example(
        patient_id=PATIENT_ID, team_id=TEAM_ID, package="basic", start="2026-06-01"
    )

    patient_id: UUID
    team_id: UUID
    package: Package
    start: Day
    id: UUID | None = None


class SignHousehold(Command):
    model_config = _example(
        patient_ids=[PATIENT_ID, EXAMPLE_ID], team_id=TEAM_ID, package="basic", start="2026-06-01"
    )

    patient_ids: Annotated[list[UUID], Field(min_length=1, max_length=20)]
    team_id: UUID
    package: Package
    start: Day
    household_id: UUID | None = None


class RenewContract(Command):
    model_config = _example(years=2)

    years: Literal[1, 2, 3]


class TerminateContract(Command):
    model_config = _example(reason="moved to another city")

    reason: Text


class ExpireContract(Command):
    model_config = _example()


class ChangeTeam(Command):
    """Another team of the contract's own center; another center's team takes the patient by a
    transfer (``/patients/{id}/transfer``)."""

    model_config = _example(team_id=TEAM_ID, reason="patient asked for a doctor nearer home")

    team_id: UUID
    reason: Text


# --- referrals ------------------------------------------------------------------------------


class Prescription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drug: Text
    dose: Annotated[str, Field(max_length=200), Clean] = ""
    frequency: Annotated[str, Field(max_length=200), Clean] = ""
    days: Annotated[int, Field(ge=1, le=366)] | None = None


class Diagnosis(BaseModel):
    """One diagnosis of the two-way referral form: its ICD-10 code and its text."""

    model_config = ConfigDict(extra="forbid")

    code: Annotated[
        str,
        Field(
            pattern=r"^\s*[A-Za-z][0-9]{2}(\.[0-9A-Za-z]{1,4})?\s*$",
            max_length=16,
            description="ICD-10: a letter, two digits, optionally a dot and 1-4 letters or "
            "digits (E11.9, I10, E11.65); stored upper case",
        ),
        Clean,
    ]
    text: Text

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text}


Diagnoses = Annotated[list[Diagnosis], Field(max_length=20)]
Phone = Annotated[
    str,
    Field(
        max_length=40,
        description="5-20 digits with spaces, dashes, brackets or a leading + (025-83262000)",
    ),
    Clean,
]


class RequestReferral(Command):
    """The two-way referral form up (转出单)."""

    model_config = _example(
        patient_id=PATIENT_ID,
        hospital_id=HOSPITAL_ID,
        department="cardiology",
        reason="血压控制不佳，疑继发性高血压",
        diagnoses=[
            {"code": "I10", "text": "原发性高血压"},
            {"code": "E11.9", "text": "2型糖尿病"},
        ],
        past_history="高血压10年，糖尿病5年",
        treatment="氨氯地平5mg qd，二甲双胍0.5g bid",
        referring_doctor="李医生",
        doctor_phone="025-83262000",
        urgency="routine",
    )

    patient_id: UUID
    hospital_id: UUID
    department: Text
    reason: Annotated[
        str,
        Field(
            min_length=1, max_length=4000, description="主要现病史 and why the patient is referred"
        ),
        Clean,
    ]
    diagnoses: Diagnoses = Field(
        default_factory=list, description="初步印象: at least one, unless `diagnosis` is given"
    )
    diagnosis: Text | None = Field(
        default=None,
        json_schema_extra={"deprecated": True},
        description="deprecated (before the form): a free-text diagnosis, recorded without a "
        "code; send `diagnoses`",
    )
    past_history: LongText = Field(default="", description="主要既往史")
    treatment: LongText = Field(default="", description="治疗经过")
    referring_doctor: Annotated[str, Field(max_length=100), Clean] = ""
    doctor_phone: Phone = ""
    urgency: Urgency = Urgency.ROUTINE
    id: UUID | None = None
    #: A rejected or cancelled referral of the patient that this one sends again.
    resends: UUID | None = Field(
        default=None,
        description="a rejected or cancelled referral of this patient from your center that "
        "this one sends again: its follow-up (due two weeks after the first request) is "
        "carried on",
    )

    def diagnosis_dicts(self) -> list[dict[str, Any]]:
        return [d.as_dict() for d in self.diagnoses]


class Accept(Command):
    model_config = _example(note="请携带既往检查资料")

    note: LongText = ""


class Reject(Command):
    model_config = _example(reason_code="no_capacity", note="本周专家号已满")

    reason_code: RejectionReason
    note: LongText = ""


class CancelReferral(Command):
    model_config = _example(reason="patient declined")

    reason: Text


class RecordArrival(Command):
    model_config = _example()


class RecordAdmission(Command):
    model_config = _example(ward="心内科一病区")

    ward: Text


class ReturnPlan(Command):
    model_config = _example(
        summary="血压控制平稳出院",
        prescriptions=[{"drug": "氨氯地平", "dose": "5mg", "frequency": "qd", "days": 30}],
        rehabilitation="低盐饮食，每日监测血压",
        follow_up_due="2026-06-15",
        diagnoses=[{"code": "I10", "text": "原发性高血压"}],
        inpatient_number="ZY2026-001234",
        key_results="24h动态血压均值 132/84 mmHg",
        next_plan="继续降压治疗，4周后复诊",
    )

    summary: Annotated[
        str, Field(min_length=1, max_length=4000, description="治疗经过 (discharge summary)"), Clean
    ]
    prescriptions: list[Prescription] = Field(default_factory=list, max_length=50)
    rehabilitation: LongText = Field(default="", description="康复建议")
    follow_up_due: Day
    diagnoses: Diagnoses = Field(default_factory=list, description="诊断结果")
    inpatient_number: Annotated[str, Field(max_length=64), Clean] = Field(
        default="", description="住院病案号"
    )
    key_results: LongText = Field(default="", description="主要检查结果")
    next_plan: LongText = Field(default="", description="下一步治疗方案")

    def prescription_dicts(self) -> list[dict[str, Any]]:
        return [p.model_dump(exclude_none=True) for p in self.prescriptions]

    def diagnosis_dicts(self) -> list[dict[str, Any]]:
        return [d.as_dict() for d in self.diagnoses]

    def form(self) -> dict[str, Any]:
        """The return form's fields besides summary, prescriptions and rehabilitation."""
        return {
            "diagnoses": self.diagnosis_dicts(),
            "inpatient_number": self.inpatient_number,
            "key_results": self.key_results,
            "next_plan": self.next_plan,
        }


class StartReturn(ReturnPlan):
    """The patient is named as the encounter did: resident id number and name."""

    model_config = _example(
        national_id="320106195003041236",
        name="王秀英",
        department="cardiology",
        summary="急诊收治后病情稳定",
        prescriptions=[{"drug": "阿司匹林", "dose": "100mg", "frequency": "qd"}],
        rehabilitation="社区随访",
        follow_up_due="2026-06-15",
    )

    national_id: NationalId
    name: Text
    department: Text
    id: UUID | None = None


class AcknowledgeReturn(Command):
    model_config = _example()


# --- quotas ----------------------------------------------------------------------------------


class PublishQuota(Command):
    model_config = _example(
        kind="expert",
        department="cardiology",
        session_date="2026-06-10",
        half_day="am",
        expert="周主任",
        slots=10,
        release_at="2026-06-09T12:00:00+08:00",
        reserved_for_center=CENTER_ID,
    )

    kind: QuotaKind
    department: Text
    session_date: Day
    slots: Annotated[int, Field(ge=1, le=10_000)]
    release_at: Moment
    expert: Text | None = None
    ward: Text | None = None
    half_day: HalfDay | None = None
    end_date: Day | None = None
    reserved_for_center: UUID | None = None
    reserved_for_district: Text | None = None
    id: UUID | None = None


class BookSlot(Command):
    model_config = _example(patient_id=PATIENT_ID, referral_id=EXAMPLE_ID)

    patient_id: UUID
    referral_id: UUID | None = None
    id: UUID | None = None

    DOMAIN_FIELDS: ClassVar[dict[str, str]] = {"booking_id": "id"}


class CancelBooking(Command):
    model_config = _example(reason="patient recovered")

    reason: Text


class RecordAttendance(Command):
    model_config = _example(attended=True)

    attended: bool


class ReleaseQuota(Command):
    model_config = _example()


# --- operations ----------------------------------------------------------------------------


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: str


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "ready", "database": "postgresql", "views_position": 4182}]
        }
    )

    status: str
    database: str
    views_position: int | None = None
