"""A realistic synthetic city, built through the application's use cases.

Deterministic for a given seed and "today": the same ids, people and journeys each time.
Mix and figures follow the domain brief (Nanjing/Nanchang team sizes, key-population shares,
referral and return pathways); every step is a real command, so every rule applies.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from uuid import UUID

from domain.application import CareCoordination
from domain.common import Actor, DomainError, add_years, stable_id, term_end
from domain.contracts import FIRST_TERM_YEARS, RENEWAL_YEARS
from domain.organisations import OrgKind
from domain.patients import Tag
from domain.referrals import RejectionReason, Urgency
from domain.teams import Role

DISTRICTS = ("玄武区", "秦淮区", "建邺区", "鼓楼区", "浦口区", "栖霞区", "雨花台区", "江宁区")
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉兰萍红建国志强淑珍凤英"
DEPARTMENTS = (
    ("cardiology", "心内科"),
    ("endocrinology", "内分泌科"),
    ("psychiatry", "精神科"),
    ("respiratory", "呼吸科"),
    ("orthopedics", "骨科"),
    ("neurology", "神经内科"),
)
#: Which department a referral for each condition goes to.
DEPARTMENT_FOR = {
    Tag.HYPERTENSION: ("cardiology", "血压控制不佳，疑继发性高血压", "I10"),
    Tag.TYPE2_DIABETES: ("endocrinology", "糖尿病并发症新发或加重", "E11"),
    Tag.SEVERE_MENTAL_DISORDER: ("psychiatry", "病情不稳定", "F20"),
    Tag.TUBERCULOSIS: ("respiratory", "疑似肺结核，转定点医院", "A15"),
}
TEAM_PER_CENTER = 8
PATIENTS_PER_CENTER = 1500


@dataclass
class DemoSummary:
    patients: int = 0
    centers: int = 0
    hospitals: int = 0
    teams: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    events: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [
            f"organisations: {self.centers} community centers, {self.hospitals} hospitals",
            f"teams: {self.teams}; patients: {self.patients}",
        ]
        out += [f"{name}: {count}" for name, count in sorted(self.counts.items())]
        rate = self.events / self.seconds if self.seconds else 0.0
        out.append(f"events recorded: {self.events} in {self.seconds:.1f} s ({rate:,.0f}/s)")
        return out


def _national_id(rng: random.Random, birth: date, sex: str) -> str:
    area = rng.choice(("320102", "320104", "320105", "320106", "320111", "320113", "320115"))
    seq = rng.randint(0, 99) * 10 + (
        rng.choice((1, 3, 5, 7, 9)) if sex == "M" else rng.choice((0, 2, 4, 6, 8))
    )
    body = f"{area}{birth:%Y%m%d}{seq:03d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    check = "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]
    return body + check


class CityBuilder:
    """Builds the city step by step; each step goes through one application command."""

    def __init__(self, app: CareCoordination, seed: int, today: date) -> None:
        self.app = app
        self.rng = random.Random(seed)
        self.today = today
        self.summary = DemoSummary()
        self.centers: list[tuple[UUID, str]] = []
        self.hospitals: list[UUID] = []
        self.teams: dict[UUID, list[UUID]] = {}
        self.gps: dict[UUID, str] = {}
        self.quotas: dict[tuple[UUID, str, date, UUID], UUID] = {}
        self.registered: dict[UUID, date] = {}

    def uuid(self) -> UUID:
        return UUID(int=self.rng.getrandbits(128), version=4)

    def moment(self, day: date, hour: int | None = None) -> datetime:
        """A moment of working hours on ``day``, local time of the deployment."""
        hour = self.rng.randint(8, 17) if hour is None else hour
        return datetime.combine(day, time(hour, self.rng.randint(0, 59)), tzinfo=self.app.timezone)

    def count(self, what: str, n: int = 1) -> None:
        self.summary.counts[what] += n

    # --- organisations and teams ------------------------------------------------------------

    def organisations(self, patients: int) -> None:
        start = self.today - timedelta(days=400)
        n_centers = max(2, -(-patients // PATIENTS_PER_CENTER))
        n_hospitals = max(2, n_centers // 4)
        for i in range(n_hospitals):
            district = DISTRICTS[i % len(DISTRICTS)]
            hid = self.uuid()
            admin = Actor(f"h{i}-admin", hid)
            self.app.register_organisation(
                OrgKind.HOSPITAL,
                name=f"南京市第{i + 1}医院",
                district=district,
                actor=admin,
                level=3 if i % 2 == 0 else 2,
                id=hid,
                at=self.moment(start),
            )
            for code, name in DEPARTMENTS:
                self.app.add_department(
                    hid,
                    code=code,
                    name=name,
                    actor=admin,
                    referral_contact=f"{name}转诊联系人",
                    at=self.moment(start),
                )
            self.hospitals.append(hid)
        for i in range(n_centers):
            district = DISTRICTS[i % len(DISTRICTS)]
            cid = self.uuid()
            admin = Actor(f"c{i}-admin", cid)
            self.app.register_organisation(
                OrgKind.COMMUNITY_CENTER,
                name=f"{district}第{i + 1}社区卫生服务中心",
                district=district,
                actor=admin,
                id=cid,
                at=self.moment(start),
            )
            residents = PATIENTS_PER_CENTER + self.rng.randint(-100, 300)
            self.app.record_residents(
                cid,
                total=residents,
                key_population=int(residents * 0.3),
                as_of=start,
                actor=admin,
                at=self.moment(start),
            )
            self.centers.append((cid, district))
            self._teams(i, cid, start)
        self.summary.centers, self.summary.hospitals = n_centers, n_hospitals

    def _teams(self, index: int, center_id: UUID, day: date) -> None:
        admin = Actor(f"c{index}-admin", center_id)
        self.teams[center_id] = []
        for t in range(TEAM_PER_CENTER):
            tid = self.uuid()
            self.app.form_team(
                center_id, name=f"家庭医生团队{t + 1}", actor=admin, id=tid, at=self.moment(day)
            )
            gp = f"c{index}-t{t}-gp"
            members = [
                (gp, Role.GENERAL_PRACTITIONER, center_id),
                (f"c{index}-t{t}-nurse", Role.NURSE, center_id),
                (f"c{index}-t{t}-ph", Role.PUBLIC_HEALTH_DOCTOR, center_id),
            ]
            if self.rng.random() < 0.7:
                members.append(
                    (f"c{index}-t{t}-spec", Role.SPECIALIST, self.rng.choice(self.hospitals))
                )
            for staff, role, org in members:
                self.app.add_team_member(
                    tid,
                    staff_id=staff,
                    name=f"{self.rng.choice(SURNAMES)}医生",
                    role=role,
                    org_id=org,
                    actor=admin,
                    at=self.moment(day),
                )
            self.teams[center_id].append(tid)
            self.gps[tid] = gp
            self.summary.teams += 1

    # --- patients and their journeys ---------------------------------------------------------

    def _tags(self, age: int) -> tuple[str, ...]:
        r = self.rng.random
        tags = []
        if age >= 35 and r() < (0.45 if age >= 65 else 0.2):
            tags.append(Tag.HYPERTENSION)
        if age >= 35 and r() < (0.2 if age >= 65 else 0.08):
            tags.append(Tag.TYPE2_DIABETES)
        if age >= 18 and r() < 0.01:
            tags.append(Tag.SEVERE_MENTAL_DISORDER)
        if r() < 0.003:
            tags.append(Tag.TUBERCULOSIS)
        if r() < 0.03:
            tags.append(Tag.DISABILITY)
        if r() < 0.02:
            tags.append(Tag.REGISTERED_POOR)
        if 20 <= age <= 40 and r() < 0.05:
            tags.append(Tag.PREGNANT_POSTPARTUM)
        if r() < 0.005:
            tags.append(Tag.FAMILY_PLANNING_SPECIAL)
        return tuple(tags)

    def patients(self, n: int) -> None:
        pending_household: list[tuple[UUID, UUID, tuple[str, ...]]] = []
        for i in range(n):
            center_id, _ = self.centers[i * len(self.centers) // n]
            age = min(95, max(0, int(self.rng.gauss(48, 22))))
            birth = self.today - timedelta(days=age * 365 + self.rng.randint(3, 364))
            sex = self.rng.choice("FM")
            pid = self.uuid()
            tags = self._tags(age)
            registered = max(self.today - timedelta(days=400), birth + timedelta(days=1))
            self.registered[pid] = registered
            admin = Actor(f"registry-{center_id.hex[:6]}", center_id)
            self.app.register_patient(
                f"{self.rng.choice(SURNAMES)}{self.rng.choice(GIVEN)}{self.rng.choice(GIVEN)}",
                sex=sex,
                birth_date=birth,
                national_id=_national_id(self.rng, birth, sex),
                phone=f"1{self.rng.randint(3, 9)}{self.rng.randint(0, 999999999):09d}",
                center_id=center_id,
                actor=admin,
                tags=tags,
                id=pid,
                at=self.moment(registered),
            )
            self.summary.patients += 1
            key = bool(tags) or age >= 65 or age <= 6
            if self.rng.random() < (0.85 if key else 0.6):
                pending_household.append((pid, center_id, tags))
                if len(pending_household) >= self.rng.choice((1, 1, 1, 2, 3)):
                    self._sign(pending_household)
                    pending_household = []
        if pending_household:
            self._sign(pending_household)

    def _sign(self, members: list[tuple[UUID, UUID, tuple[str, ...]]]) -> None:
        center_id = members[0][1]
        if any(c != center_id for _, c, _ in members):
            for m in members:
                self._sign([m])
            return
        team_id = self.rng.choice(self.teams[center_id])
        start = self.today - timedelta(days=self.rng.randint(30, 360))
        start = max([start] + [self.registered[pid] + timedelta(days=1) for pid, _, _ in members])
        at = self.moment(start)
        actor = Actor(self.gps[team_id], center_id)
        tags = set().union(*(set(t) for _, _, t in members))
        package = "chronic_disease" if tags & {Tag.HYPERTENSION, Tag.TYPE2_DIABETES} else "basic"
        if len(members) == 1:
            outcomes = [
                self.app.sign_contract(
                    members[0][0],
                    team_id=team_id,
                    package=package,
                    start=start,
                    actor=actor,
                    id=self.uuid(),
                    at=at,
                )
            ]
        else:
            household = self.uuid()
            outcomes = self.app.sign_household(
                [m[0] for m in members],
                team_id=team_id,
                package=package,
                start=start,
                actor=actor,
                household_id=household,
                at=at,
                ids=[stable_id("contract", household, pid) for pid, _, _ in members],
            )
            self.count("households signed together")
        self.count("contracts signed", len(outcomes))
        for (pid, _, ptags), outcome in zip(members, outcomes, strict=True):
            self._journey(pid, outcome.id, team_id, center_id, start, set(ptags), actor)

    def _journey(
        self,
        pid: UUID,
        contract_id: UUID,
        team_id: UUID,
        center_id: UUID,
        start: date,
        tags: set[str],
        actor: Actor,
    ) -> None:
        rng = self.rng
        # routine follow-ups for chronic patients
        if tags & {Tag.HYPERTENSION, Tag.TYPE2_DIABETES, Tag.SEVERE_MENTAL_DISORDER}:
            day = start + timedelta(days=rng.randint(20, 80))
            while day < self.today - timedelta(days=1) and rng.random() < 0.8:
                self._visit(pid, day, actor, tags)
                day += timedelta(days=rng.randint(70, 110))
        # an upward referral for some
        conditions = [t for t in DEPARTMENT_FOR if t in tags]
        if (conditions and rng.random() < 0.25) or rng.random() < 0.03:
            cond = rng.choice(conditions) if conditions else Tag.HYPERTENSION
            self._referral(pid, center_id, start, cond, actor)
        if rng.random() < 0.02:
            try:
                self.app.terminate_contract(
                    contract_id,
                    reason="居民迁出或自愿解约",
                    actor=actor,
                    at=self.moment(self.today - timedelta(days=3)),
                )
                self.count("contracts terminated")
            except DomainError:
                pass
        elif start < self.today - timedelta(days=330) and rng.random() < 0.5:
            # as long as wished, but the end no more than 3 years after the renewal's day
            renewed = self.today - timedelta(days=2)
            end = term_end(start, FIRST_TERM_YEARS)
            wished = rng.choice(RENEWAL_YEARS)
            years = max(
                [y for y in RENEWAL_YEARS if add_years(end, y) <= add_years(renewed, 3)],
                default=0,
            )
            if years:
                self.app.renew_contract(
                    contract_id,
                    years=min(wished, years),
                    actor=actor,
                    at=self.moment(renewed),
                )
                self.count("contracts renewed")

    def _visit(self, pid: UUID, day: date, actor: Actor, tags: set[str]) -> None:
        m: dict[str, float] = {}
        if Tag.HYPERTENSION in tags:
            m.update(systolic_bp=self.rng.randint(115, 175), diastolic_bp=self.rng.randint(70, 105))
        if Tag.TYPE2_DIABETES in tags:
            m["fasting_glucose"] = round(self.rng.uniform(5.0, 11.0), 1)
        risk = str(self.rng.randint(0, 3)) if Tag.SEVERE_MENTAL_DISORDER in tags else None
        kind = self.rng.choice(("face_to_face", "face_to_face", "home_visit", "phone"))
        self.app.record_follow_up(
            pid,
            on=day,
            kind=kind,
            actor=actor,
            measurements=m,
            risk_level=risk,
            id=self.uuid(),
            at=self.moment(day),
        )
        self.count("follow-up visits")

    def _referral(self, pid: UUID, center_id: UUID, start: date, cond: str, actor: Actor) -> None:
        rng = self.rng
        department, reason, diagnosis = DEPARTMENT_FOR[cond]  # type: ignore[index]
        hospital = rng.choice(self.hospitals)
        latest = (self.today - start).days - 1
        day = start + timedelta(days=rng.randint(1, max(1, latest)))
        urgency = rng.choice((Urgency.ROUTINE, Urgency.ROUTINE, Urgency.URGENT))
        outcome = self.app.request_referral(
            pid,
            hospital_id=hospital,
            department=department,
            reason=reason,
            diagnosis=diagnosis,
            urgency=urgency,
            actor=actor,
            id=self.uuid(),
            at=self.moment(day, 9),
        )
        rid = outcome.id
        self.count("referrals requested")
        hosp = Actor(f"h-{hospital.hex[:6]}-{department}", hospital)
        decision = rng.random()
        if decision < 0.1 or day >= self.today - timedelta(days=1):
            self.count("referrals awaiting decision")
            return
        if decision < 0.2:
            self.app.reject_referral(
                rid,
                reason_code=rng.choice(list(RejectionReason)),
                actor=hosp,
                note="建议先社区治疗",
                at=self.moment(day, 14),
            )
            self.count("referrals rejected")
            return
        if decision < 0.25:
            self.app.cancel_referral(
                rid, reason="患者自行前往其他医院", actor=actor, at=self.moment(day, 12)
            )
            self.count("referrals cancelled")
            return
        self.app.accept_referral(rid, actor=hosp, at=self.moment(day, 13))
        self.count("referrals accepted")
        session = day + timedelta(days=rng.randint(2, 6))
        if session < self.today and rng.random() < 0.7:
            self._book(pid, rid, hospital, department, center_id, day, session, actor)
        arrive = session if session < self.today else None
        if arrive is None or rng.random() < 0.1:
            return
        self.app.record_arrival(rid, actor=hosp, at=self.moment(arrive, 10))
        self.count("patients arrived")
        stay = arrive
        if rng.random() < 0.4:
            self.app.record_admission(
                rid, ward=f"{department}-病区", actor=hosp, at=self.moment(arrive, 11)
            )
            stay = arrive + timedelta(days=rng.randint(3, 12))
            self.count("patients admitted")
        if stay >= self.today or rng.random() < 0.15:
            return
        due = stay + timedelta(days=rng.choice((7, 14, 28)))
        self.app.return_to_community(
            rid,
            summary="病情稳定，转回社区康复",
            prescriptions=[{"drug": "氨氯地平片", "dose": "5mg qd", "days": 30}],
            rehabilitation="社区随访监测血压血糖，两周后复诊",
            follow_up_due=due,
            actor=hosp,
            at=self.moment(stay, 15),
        )
        self.count("returns to community")
        if stay + timedelta(days=1) < self.today and rng.random() < 0.85:
            ack = stay + timedelta(days=1)
            self.app.acknowledge_return(rid, actor=actor, at=self.moment(ack, 9))
            self.count("returns acknowledged")
            visit = ack + timedelta(days=rng.randint(1, 20))
            if visit < self.today and rng.random() < 0.8:
                self._visit(pid, visit, actor, set())
                self.count("post-referral follow-ups")

    def _book(
        self,
        pid: UUID,
        rid: UUID,
        hospital: UUID,
        department: str,
        center_id: UUID,
        day: date,
        session: date,
        actor: Actor,
    ) -> None:
        key = (hospital, department, session, center_id)
        qid = self.quotas.get(key)
        hosp = Actor(f"h-{hospital.hex[:6]}-quota", hospital)
        if qid is None:
            qid = self.uuid()
            self.app.publish_quota(
                hospital,
                kind="expert",
                department=department,
                session_date=session,
                slots=5,
                release_at=self.moment(session - timedelta(days=1), 12),
                actor=hosp,
                id=qid,
                at=self.moment(day - timedelta(days=1), 8),
                expert=f"{department}专家",
                half_day="am",
                reserved_for_center=center_id,
            )
            self.quotas[key] = qid
            self.count("quotas published")
        booked_at = self.moment(day, 16)
        try:
            with self.app.recorded_as_of(booked_at):
                booking = self.app.book_slot(
                    qid, patient_id=pid, actor=actor, referral_id=rid, id=self.uuid(), at=booked_at
                )
        except DomainError:
            self.count("bookings refused (quota full)")
            return
        self.count("expert slots booked")
        attended = self.rng.random() < 0.9
        self.app.record_attendance(
            qid, booking_id=booking.id, attended=attended, actor=hosp, at=self.moment(session, 12)
        )
        self.count("bookings attended" if attended else "no-shows")

    def release_quotas(self) -> None:
        for (hospital, _, _, _), qid in sorted(self.quotas.items(), key=lambda kv: str(kv[1])):
            try:
                self.app.release_quota(
                    qid,
                    actor=Actor("quota-release", hospital),
                    at=datetime.combine(self.today, time(0), tzinfo=self.app.timezone),
                )
                self.count("quotas released at cutoff")
            except DomainError:
                pass

    def direct_returns(self, n: int) -> None:
        for _ in range(n):
            center_id, _ = self.rng.choice(self.centers)
            hospital = self.rng.choice(self.hospitals)
            # a registered patient of that center: register one who was treated directly
            day = self.today - timedelta(days=self.rng.randint(5, 60))
            birth = day - timedelta(days=self.rng.randint(60, 85) * 365)
            sex = self.rng.choice("FM")
            pid = self.uuid()
            name = f"{self.rng.choice(SURNAMES)}{self.rng.choice(GIVEN)}"
            national_id = _national_id(self.rng, birth, sex)
            self.app.register_patient(
                name,
                sex=sex,
                birth_date=birth,
                national_id=national_id,
                phone="13900000000",
                center_id=center_id,
                actor=Actor("registry", center_id),
                id=pid,
                at=self.moment(day - timedelta(days=10)),
            )
            self.summary.patients += 1
            self.app.start_return(
                pid,
                national_id=national_id,
                name=name,
                hospital_id=hospital,
                department="orthopedics",
                summary="骨折术后，转社区康复",
                prescriptions=[{"drug": "钙尔奇D", "dose": "1 tab qd"}],
                rehabilitation="康复训练，每周一次家访",
                follow_up_due=day + timedelta(days=10),
                actor=Actor("h-ortho", hospital),
                id=self.uuid(),
                at=self.moment(day),
            )
            self.count("returns started by hospitals")


def _count_events(app: CareCoordination, after: int) -> int:
    """Events recorded after position ``after`` (ids may have gaps, so count them; the
    event store counts without reading them)."""
    count_after = getattr(app.recorder, "count_after", None)
    if count_after is not None:
        return int(count_after(after))
    count, start = 0, after + 1
    while True:
        page = app.recorder.select_notifications(start=start, limit=10_000)
        if not page:
            return count
        count += len(page)
        start = page[-1].id + 1


def generate(
    app: CareCoordination,
    patients: int,
    seed: int,
    today: date | None = None,
    progress: Callable[[int], None] | None = None,
    bulk: bool = True,
) -> DemoSummary:
    """Build a city of ``patients`` residents through ``app``; return what was recorded.

    With ``bulk`` (the default) the use cases' changes are written a few hundred aggregates
    per transaction (:meth:`CareCoordination.bulk`); the events are the same either way."""
    import time as clock

    began = clock.perf_counter()
    start_position = app.max_position()
    city = CityBuilder(app, seed, today or app.now().date())
    with app.bulk() if bulk else contextlib.nullcontext():
        city.organisations(patients)
        batch = 500
        for done in range(0, patients, batch):
            city.patients(min(batch, patients - done))
            if progress:
                progress(min(batch, patients - done))
        city.direct_returns(max(1, patients // 500))
        city.release_quotas()
    city.summary.events = _count_events(app, start_position)
    city.summary.seconds = clock.perf_counter() - began
    return city.summary
