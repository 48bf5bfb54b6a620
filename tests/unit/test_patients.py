"""Patients: the registry, key populations (some derived from age on a day), moving away, and
the contract slot that keeps at most one active contract per patient."""

from __future__ import annotations

from datetime import date

import pytest

from domain.common import InvalidValue, NotFound, NotPermitted, stable_id
from domain.patients import (
    AlreadyAtThisCenter,
    ContractAlreadyActive,
    DerivedTag,
    NotCurrentContract,
    NoTransferRequested,
    Patient,
    PatientMovedAway,
    TransferAlreadyRequested,
    TransferRequired,
    valid_national_id,
)
from tests.unit.story import (
    CENTER,
    CENTER_ADMIN,
    GP,
    HOSPITAL_DESK,
    OTHER_CENTER,
    OTHER_CENTER_GP,
    OTHER_TEAM,
    PATIENT,
    TEAM,
    TODAY,
    at,
    days,
    recorded,
)
from tests.world import national_id

CONTRACT = stable_id("unit", "contract", 1)
NEXT_CONTRACT = stable_id("unit", "contract", 2)


def patient(birth: date = date(1950, 3, 4), nid: str | None = None) -> Patient:
    return Patient.register(
        PATIENT,
        name="王秀英",
        sex="F",
        birth_date=birth,
        national_id=nid or national_id(birth),
        phone="13800000000",
        district="鼓楼区",
        center_id=CENTER,
        actor=CENTER_ADMIN,
        at=at(),
    )


def test_a_resident_is_registered_with_name_sex_birth_date_national_id_phone_and_district() -> None:
    p = patient()
    assert (p.name, p.sex, p.birth_date, p.phone, p.district, p.center_id) == (
        "王秀英",
        "F",
        date(1950, 3, 4),
        "13800000000",
        "鼓楼区",
        CENTER,
    )
    assert recorded(p) == ["Registered"]


def test_the_national_id_check_character_follows_iso_7064_mod_11_2() -> None:
    assert valid_national_id("11010519491231002X")  # the standard's own example
    assert not valid_national_id("110105194912310021")  # wrong check character
    assert not valid_national_id("11010519491231002x")  # lower-case x
    assert not valid_national_id("1101051949123100")  # too short
    good = national_id(date(1950, 3, 4))
    wrong = good[:17] + ("0" if good[17] != "0" else "1")
    with pytest.raises(InvalidValue):
        patient(nid=wrong)


def test_a_birth_date_in_the_future_and_an_unknown_sex_are_refused() -> None:
    with pytest.raises(InvalidValue):
        patient(birth=days(1))
    with pytest.raises(InvalidValue):
        Patient.register(
            PATIENT,
            name="王秀英",
            sex="X",
            birth_date=date(1950, 3, 4),
            national_id=national_id(date(1950, 3, 4)),
            phone="1",
            district="鼓楼区",
            center_id=CENTER,
            actor=CENTER_ADMIN,
            at=at(),
        )


def test_key_population_tags_are_recorded_once_and_can_be_removed() -> None:
    p = patient()
    p.tag("type2_diabetes", CENTER_ADMIN, at())
    p.tag("type2_diabetes", CENTER_ADMIN, at())
    p.tag("registered_poor", CENTER_ADMIN, at())
    p.untag("registered_poor", CENTER_ADMIN, at())
    assert p.tags == {"type2_diabetes"}
    assert recorded(p) == ["Registered", "Tagged", "Tagged", "Untagged"]
    with pytest.raises(InvalidValue):
        p.tag("aged_65_plus", CENTER_ADMIN, at())  # derived, never recorded


def test_aged_65_plus_starts_on_the_65th_birthday() -> None:
    p = patient(birth=date(1961, 6, 1))
    assert DerivedTag.AGED_65_PLUS not in p.key_populations(date(2026, 5, 31))
    assert DerivedTag.AGED_65_PLUS in p.key_populations(date(2026, 6, 1))
    assert p.age_on(date(2026, 5, 31)) == 64
    assert p.age_on(date(2026, 6, 1)) == 65


def test_a_child_is_0_to_6_until_the_7th_birthday() -> None:
    p = patient(birth=date(2019, 6, 1))
    assert DerivedTag.CHILD_0_6 in p.key_populations(date(2019, 6, 1))  # the day of birth
    assert DerivedTag.CHILD_0_6 in p.key_populations(date(2026, 5, 31))
    assert DerivedTag.CHILD_0_6 not in p.key_populations(date(2026, 6, 1))


def test_derived_tags_join_the_recorded_ones_and_are_not_stored() -> None:
    p = patient(birth=date(1950, 3, 4))
    p.tag("hypertension", CENTER_ADMIN, at())
    assert p.key_populations(TODAY) == {"hypertension", DerivedTag.AGED_65_PLUS}
    assert p.tags == {"hypertension"}


def test_someone_born_on_29_february_has_the_same_age_and_tags_on_28_february() -> None:
    p = patient(birth=date(1960, 2, 29))
    assert p.age_on(date(2025, 2, 27)) == 64
    assert p.age_on(date(2025, 2, 28)) == 65
    assert DerivedTag.AGED_65_PLUS in p.key_populations(date(2025, 2, 28))


def test_moving_out_of_the_area_is_an_event_and_happens_once() -> None:
    p = patient()
    p.move_away("上海市", CENTER_ADMIN, at())
    assert p.moved_away
    assert recorded(p) == ["Registered", "MovedAway"]
    with pytest.raises(PatientMovedAway):
        p.move_away("杭州市", CENTER_ADMIN, at())


def test_a_patient_who_moved_away_cannot_take_a_contract() -> None:
    p = patient()
    p.move_away("上海市", CENTER_ADMIN, at())
    with pytest.raises(PatientMovedAway):
        p.take_contract(CONTRACT, TODAY, days(364), CENTER_ADMIN, at())


def test_a_patient_holds_at_most_one_active_contract_at_any_moment() -> None:
    p = patient()
    p.take_contract(CONTRACT, TODAY, days(364), CENTER_ADMIN, at())
    with pytest.raises(ContractAlreadyActive):
        p.take_contract(NEXT_CONTRACT, days(364), days(728), CENTER_ADMIN, at())  # last day
    with pytest.raises(ContractAlreadyActive):
        p.take_contract(NEXT_CONTRACT, days(-30), days(334), CENTER_ADMIN, at())  # back-dated
    p.take_contract(NEXT_CONTRACT, days(365), days(729), CENTER_ADMIN, at())  # the day after
    assert p.contract_id == NEXT_CONTRACT


def test_a_released_contract_frees_the_slot() -> None:
    p = patient()
    p.take_contract(CONTRACT, TODAY, days(364), CENTER_ADMIN, at())
    p.release_contract(CONTRACT, CENTER_ADMIN, at(days(10)))
    assert not p.has_active_contract(days(10))
    p.take_contract(NEXT_CONTRACT, days(10), days(374), CENTER_ADMIN, at(days(10)))


def test_only_the_current_contract_is_extended() -> None:
    p = patient()
    p.take_contract(CONTRACT, TODAY, days(364), CENTER_ADMIN, at())
    p.extend_contract(CONTRACT, days(364 + 730), CENTER_ADMIN, at())
    assert p.has_active_contract(days(1000))
    with pytest.raises(NotCurrentContract):
        p.extend_contract(NEXT_CONTRACT, days(2000), CENTER_ADMIN, at())


def test_only_the_patients_own_center_registers_tags_or_moves_them() -> None:
    with pytest.raises(NotPermitted):
        Patient.register(
            PATIENT,
            name="王秀英",
            sex="F",
            birth_date=date(1950, 3, 4),
            national_id=national_id(date(1950, 3, 4)),
            phone="13800000000",
            district="鼓楼区",
            center_id=CENTER,
            actor=OTHER_CENTER_GP,
            at=at(),
        )
    p = patient()
    recorded(p)
    for step in (
        lambda: p.tag("hypertension", OTHER_CENTER_GP, at()),
        lambda: p.untag("hypertension", OTHER_CENTER_GP, at()),
        lambda: p.move_away("上海市", HOSPITAL_DESK, at()),
    ):
        with pytest.raises(NotPermitted):
            step()
    assert recorded(p) == [] and not p.moved_away


# --- transfers between centers (issue #11) ----------------------------------------------------


def contracted() -> Patient:
    p = patient()
    p.take_contract(CONTRACT, TODAY, days(364), CENTER_ADMIN, at(), center_id=CENTER)
    recorded(p)
    return p


def request(p: Patient, consent: str = "转签同意书 0042") -> bool:
    return p.request_transfer(
        center_id=OTHER_CENTER,
        team_id=OTHER_TEAM,
        consent=consent,
        district="江宁区",
        actor=OTHER_CENTER_GP,
        at=at(),
    )


def test_a_contracted_patient_moves_when_the_new_center_asks_and_the_current_one_releases() -> None:
    p = contracted()
    with pytest.raises(TransferRequired):  # nothing released: nobody moves the patient
        p.transfer(OTHER_CENTER, "江宁区", OTHER_CENTER_GP, at())
    assert request(p) is False
    assert recorded(p) == ["TransferRequested"]
    assert (p.center_id, p.transfer_request) == (
        CENTER,
        {"center_id": OTHER_CENTER, "team_id": OTHER_TEAM, "consent": "转签同意书 0042"},
    )
    with pytest.raises(TransferRequired):  # requested is not released
        p.transfer(OTHER_CENTER, "江宁区", OTHER_CENTER_GP, at())
    with pytest.raises(NotPermitted):  # the requester does not release its own request
        p.release_transfer(OTHER_CENTER_GP, at())
    released = p.release_transfer(CENTER_ADMIN, at())
    assert (released["center_id"], released["team_id"]) == (OTHER_CENTER, OTHER_TEAM)
    p.transfer(OTHER_CENTER, "江宁区", CENTER_ADMIN, at())
    assert recorded(p) == ["TransferReleased", "Transferred"]
    assert (p.center_id, p.district, p.transfer_request) == (OTHER_CENTER, "江宁区", None)


def test_a_transfer_request_is_one_at_a_time_cites_consent_and_goes_elsewhere() -> None:
    p = contracted()
    with pytest.raises(NotPermitted):  # asked for by the center that will care
        p.request_transfer(
            center_id=OTHER_CENTER,
            team_id=OTHER_TEAM,
            consent="x",
            district="江宁区",
            actor=CENTER_ADMIN,
            at=at(),
        )
    with pytest.raises(AlreadyAtThisCenter):
        p.request_transfer(
            center_id=CENTER, team_id=TEAM, consent="x", district="鼓楼区", actor=GP, at=at()
        )
    with pytest.raises(InvalidValue):
        request(p, consent="  ")
    request(p)
    with pytest.raises(TransferAlreadyRequested):
        request(p)


def test_the_current_center_declines_and_the_requester_withdraws() -> None:
    p = contracted()
    with pytest.raises(NoTransferRequested):
        p.decline_transfer("仍在治疗", CENTER_ADMIN, at())
    with pytest.raises(NotPermitted):  # nothing of this patient's is the other center's yet
        p.withdraw_transfer(OTHER_CENTER_GP, at())
    request(p)
    with pytest.raises(NotPermitted):
        p.decline_transfer("no", OTHER_CENTER_GP, at())
    with pytest.raises(InvalidValue):
        p.decline_transfer(" ", CENTER_ADMIN, at())
    p.decline_transfer("仍在治疗", CENTER_ADMIN, at())
    request(p)
    with pytest.raises(NotPermitted):  # only the requester withdraws
        p.withdraw_transfer(CENTER_ADMIN, at())
    p.withdraw_transfer(OTHER_CENTER_GP, at())
    assert recorded(p) == [
        "TransferRequested",
        "TransferDeclined",
        "TransferRequested",
        "TransferWithdrawn",
    ]
    assert (p.center_id, p.transfer_request) == (CENTER, None)


def test_without_an_active_contract_or_after_moving_away_the_request_completes_at_once() -> None:
    p = patient()
    recorded(p)
    assert request(p) is True
    assert recorded(p) == ["TransferRequested", "Transferred"]
    assert (p.center_id, p.transfer_request) == (OTHER_CENTER, None)

    gone = contracted()
    gone.release_contract(CONTRACT, CENTER_ADMIN, at())
    gone.move_away("上海市", CENTER_ADMIN, at())
    recorded(gone)
    assert request(gone) is True
    assert recorded(gone) == ["TransferRequested", "Transferred"]
    assert (gone.center_id, gone.moved_away) == (OTHER_CENTER, False)  # back in a registry
    gone.take_contract(NEXT_CONTRACT, TODAY, days(364), OTHER_CENTER_GP, at(), OTHER_CENTER)


def test_a_patient_is_identified_by_national_id_and_name_or_reads_as_absent() -> None:
    p = patient()
    nid = national_id(date(1950, 3, 4))
    p.ensure_identified_by(nid, "王秀英")
    p.ensure_identified_by(nid.lower(), " 王秀英 ")
    for wrong_id, wrong_name in ((nid, "王秀"), (national_id(date(1950, 3, 4), 124), "王秀英")):
        with pytest.raises(NotFound) as refused:
            p.ensure_identified_by(wrong_id, wrong_name)
        assert refused.value.not_found
