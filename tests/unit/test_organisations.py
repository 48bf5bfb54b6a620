"""Organisations: community centers and 2nd/3rd-level hospitals with their departments."""

from __future__ import annotations

import pytest

from domain.common import InvalidValue, NotPermitted
from domain.organisations import (
    DepartmentExists,
    NotACommunityCenter,
    NotAHospital,
    Organisation,
    UnknownDepartment,
)
from tests.unit.story import (
    CENTER,
    CENTER_ADMIN,
    HOSPITAL,
    HOSPITAL_DESK,
    OTHER_CENTER_GP,
    OTHER_HOSPITAL_DESK,
    TODAY,
    at,
    recorded,
)


def hospital() -> Organisation:
    org = Organisation.register(
        HOSPITAL,
        kind="hospital",
        name="鼓楼医院",
        district="鼓楼区",
        actor=HOSPITAL_DESK,
        at=at(),
        level=3,
    )
    org.add_department("cardiology", "心内科", "王主任", HOSPITAL_DESK, at())
    return org


def center() -> Organisation:
    return Organisation.register(
        CENTER,
        kind="community_center",
        name="鼓楼社区卫生服务中心",
        district="鼓楼区",
        actor=CENTER_ADMIN,
        at=at(),
    )


def test_a_center_and_a_hospital_are_registered_with_kind_name_and_district() -> None:
    c, h = center(), hospital()
    assert (c.kind, c.name, c.district, c.is_center) == (
        "community_center",
        "鼓楼社区卫生服务中心",
        "鼓楼区",
        True,
    )
    assert (h.is_hospital, h.level) == (True, 3)
    assert recorded(h) == ["Registered", "DepartmentAdded"]


@pytest.mark.parametrize(
    ("kind", "name", "district", "level"),
    [
        ("pharmacy", "x", "鼓楼区", None),
        ("community_center", " ", "鼓楼区", None),
        ("community_center", "x", "", None),
        ("hospital", "x", "鼓楼区", None),
        ("hospital", "x", "鼓楼区", 1),
    ],
)
def test_an_organisation_needs_a_known_kind_a_name_a_district_and_a_hospital_a_level(
    kind: str, name: str, district: str, level: int | None
) -> None:
    with pytest.raises(InvalidValue):
        Organisation.register(
            HOSPITAL,
            kind=kind,
            name=name,
            district=district,
            actor=HOSPITAL_DESK,
            at=at(),
            level=level,
        )


def test_only_hospitals_have_departments() -> None:
    with pytest.raises(NotAHospital):
        center().add_department("cardiology", "心内科", None, CENTER_ADMIN, at())


def test_a_department_code_is_used_once() -> None:
    h = hospital()
    with pytest.raises(DepartmentExists):
        h.add_department("cardiology", "心内科二", None, HOSPITAL_DESK, at())


def test_referrals_and_quotas_need_an_existing_hospital_department() -> None:
    hospital().ensure_department("cardiology")
    with pytest.raises(UnknownDepartment):
        hospital().ensure_department("oncology")
    with pytest.raises(NotAHospital):
        center().ensure_department("cardiology")


def test_only_centers_record_residents_and_key_population_fits_in_total() -> None:
    c = center()
    c.record_residents(1500, 450, TODAY, CENTER_ADMIN, at())
    assert c.residents == {"total": 1500, "key_population": 450}
    with pytest.raises(InvalidValue):
        c.record_residents(100, 101, TODAY, CENTER_ADMIN, at())
    with pytest.raises(NotACommunityCenter):
        hospital().record_residents(10, 1, TODAY, HOSPITAL_DESK, at())


def test_an_organisation_changes_only_its_own_record() -> None:
    h, c = hospital(), center()
    with pytest.raises(NotPermitted):
        h.add_department("neurology", "神经内科", None, OTHER_HOSPITAL_DESK, at())
    with pytest.raises(NotPermitted):
        c.record_residents(1000, 300, TODAY, OTHER_CENTER_GP, at())
    assert "neurology" not in h.departments
