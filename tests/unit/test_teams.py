"""Care teams: one center's family doctors; a GP to take contracts; specialists from hospitals."""

from __future__ import annotations

import pytest

from domain.common import Actor, InvalidValue, NotPermitted
from domain.teams import (
    AlreadyMember,
    CareTeam,
    NotAMember,
    SpecialistMustComeFromHospital,
    TeamCannotTakeContracts,
)
from tests.unit.story import (
    CENTER,
    CENTER_ADMIN,
    HOSPITAL,
    OTHER_CENTER,
    OTHER_CENTER_GP,
    TEAM,
    at,
    days,
    recorded,
)


def team() -> CareTeam:
    return CareTeam.form(TEAM, center_id=CENTER, name="团队一", actor=CENTER_ADMIN, at=at())


def test_a_team_is_formed_by_its_own_center_and_belongs_to_it() -> None:
    t = team()
    assert (t.center_id, t.name, t.members) == (CENTER, "团队一", {})
    with pytest.raises(NotPermitted):
        CareTeam.form(TEAM, center_id=CENTER, name="团队一", actor=OTHER_CENTER_GP, at=at())
    with pytest.raises(InvalidValue):
        CareTeam.form(TEAM, center_id=CENTER, name="  ", actor=CENTER_ADMIN, at=at())


def test_a_team_takes_contracts_only_while_it_has_a_general_practitioner() -> None:
    t = team()
    t.add_member("nurse-1", "张护士", "nurse", CENTER, False, CENTER_ADMIN, at())
    with pytest.raises(TeamCannotTakeContracts):
        t.ensure_can_take_contracts()

    t.add_member("gp-1", "李医生", "general_practitioner", CENTER, False, CENTER_ADMIN, at())
    t.ensure_can_take_contracts()

    t.remove_member("gp-1", CENTER_ADMIN, at(days(90)))
    assert t.can_take_contracts is False
    with pytest.raises(TeamCannotTakeContracts):
        t.ensure_can_take_contracts()


def test_members_join_and_leave_over_time() -> None:
    t = team()
    t.add_member("gp-1", "李医生", "general_practitioner", CENTER, False, CENTER_ADMIN, at())
    t.remove_member("gp-1", CENTER_ADMIN, at(days(30)))
    t.add_member(
        "gp-1", "李医生", "general_practitioner", CENTER, False, CENTER_ADMIN, at(days(60))
    )
    assert list(t.members) == ["gp-1"]
    assert recorded(t) == ["Formed", "MemberJoined", "MemberLeft", "MemberJoined"]


def test_a_person_joins_once_and_only_a_member_leaves() -> None:
    t = team()
    t.add_member("nurse-1", "张护士", "nurse", CENTER, False, CENTER_ADMIN, at())
    with pytest.raises(AlreadyMember):
        t.add_member("nurse-1", "张护士", "nurse", CENTER, False, CENTER_ADMIN, at())
    with pytest.raises(NotAMember):
        t.remove_member("gp-404", CENTER_ADMIN, at())


def test_a_specialist_member_comes_from_a_hospital() -> None:
    t = team()
    t.add_member("spec-1", "周主任", "specialist", HOSPITAL, True, CENTER_ADMIN, at())
    assert t.members["spec-1"]["org_id"] == HOSPITAL.hex
    with pytest.raises(SpecialistMustComeFromHospital):
        t.add_member("spec-2", "吴医生", "specialist", CENTER, False, CENTER_ADMIN, at())


def test_everyone_but_a_specialist_comes_from_the_teams_center() -> None:
    with pytest.raises(InvalidValue):
        team().add_member("nurse-9", "外院护士", "nurse", HOSPITAL, True, CENTER_ADMIN, at())
    with pytest.raises(InvalidValue):
        team().add_member("x", "x", "pharmacist", CENTER, False, CENTER_ADMIN, at())


def test_only_the_teams_center_changes_its_members() -> None:
    t = team()
    with pytest.raises(NotPermitted):
        t.add_member(
            "gp-9", "x", "general_practitioner", OTHER_CENTER, False, OTHER_CENTER_GP, at()
        )
    t.add_member("gp-1", "李医生", "general_practitioner", CENTER, False, CENTER_ADMIN, at())
    with pytest.raises(NotPermitted):
        t.remove_member("gp-1", OTHER_CENTER_GP, at())


def test_the_center_and_current_members_speak_for_the_team() -> None:
    t = team()
    t.add_member("spec-1", "周主任", "specialist", HOSPITAL, True, CENTER_ADMIN, at())
    assert t.speaks_for(CENTER_ADMIN)
    assert t.speaks_for(Actor("spec-1", HOSPITAL))
    assert not t.speaks_for(Actor("spec-1", OTHER_CENTER))  # same name, other organisation
    assert not t.speaks_for(OTHER_CENTER_GP)
    t.remove_member("spec-1", CENTER_ADMIN, at())
    assert not t.speaks_for(Actor("spec-1", HOSPITAL))
