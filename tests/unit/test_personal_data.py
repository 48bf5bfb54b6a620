"""What is a patient's personal data is declared once (domain.personal) and sealed with the
patient's own key wherever an event is stored; nothing personal can be stored by omission."""

from __future__ import annotations

import os
from datetime import date
from typing import Any, get_type_hints
from uuid import uuid4

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.personal import NOT_PERSONAL, PERSONAL, PERSONAL_FIELDS
from eventstore.personal import ERASED, TOKEN, open_value, reveal, seal_tree
from tests.golden.history import domain_event_classes

_BASE = {"originator_id", "originator_version", "timestamp", "actor", "at", "originator_topic"}


def _texts(cls: type) -> set[str]:
    """The fields of an event class that can hold text (str, or containers of it)."""
    hints = get_type_hints(cls)
    return {
        name
        for name, hint in hints.items()
        if name not in _BASE and "ClassVar" not in str(hint) and "str" in str(hint)
    }


def test_every_text_field_of_every_event_is_personal_or_listed_as_not_with_a_reason() -> None:
    undeclared = []
    for cls in domain_event_classes():
        personal = set(PERSONAL_FIELDS.get(cls, ()))
        for name in sorted(_texts(cls) - personal):
            if not NOT_PERSONAL.get(f"{cls.__qualname__}.{name}"):
                undeclared.append(f"{cls.__qualname__}.{name}")
    assert not undeclared, (
        f"declare these in domain.personal (PERSONAL or NOT_PERSONAL): {undeclared}"
    )


def test_declared_personal_fields_exist_on_their_event_classes() -> None:
    for cls, fields in PERSONAL_FIELDS.items():
        assert set(fields) <= set(get_type_hints(cls)), cls.__qualname__
    listed = {f"{a.__qualname__}.{e}" for a, events in PERSONAL.items() for e in events}
    assert len(listed) == len(PERSONAL_FIELDS)


def test_a_field_is_not_both_personal_and_not() -> None:
    personal = {f"{c.__qualname__}.{f}" for c, fs in PERSONAL_FIELDS.items() for f in fs}
    assert not personal & set(NOT_PERSONAL)


class Keys:
    """A key ring's two methods the tokens use, in memory."""

    def __init__(self) -> None:
        self.keys: dict[str, AESGCM | None] = {}

    def aead(self, subject: Any) -> AESGCM | None:
        return self.keys.get(subject if isinstance(subject, str) else subject.hex)

    def load(self, subjects: Any) -> None:
        pass

    def refresh(self) -> None:
        pass


def test_a_sealed_value_opens_only_with_its_patients_key_and_reads_erased_without_it() -> None:
    keys, patient, other = Keys(), uuid4(), uuid4()
    keys.keys[patient.hex] = AESGCM(os.urandom(32))
    keys.keys[other.hex] = AESGCM(os.urandom(32))
    plan = {"summary": "王小明 出院", "prescriptions": [{"drug": "二甲双胍", "dose_mg": 500}]}
    sealed = seal_tree(keys.aead(patient), patient, plan)  # type: ignore[arg-type]
    assert "王小明" not in str(sealed) and "二甲双胍" not in str(sealed)
    assert sealed["prescriptions"][0]["dose_mg"] == 500  # numbers stay as they are
    assert open_value(keys, sealed) == plan  # type: ignore[arg-type]
    born = seal_tree(keys.aead(patient), patient, date(1950, 3, 4))  # type: ignore[arg-type]
    assert open_value(keys, born) == date(1950, 3, 4)  # type: ignore[arg-type]
    # inside a longer text (a timeline summary), revealed for a reader
    line = f"Referred ({sealed['summary']})"
    assert reveal(keys, [{"summary": line}]) == [{"summary": "Referred (王小明 出院)"}]  # type: ignore[arg-type]
    # a token moved to another patient's place does not open there
    match = TOKEN.fullmatch(sealed["summary"])
    assert match is not None
    forged = sealed["summary"].replace(
        match.group(2)[:21],
        seal_tree(keys.aead(other), other, "x")[2:23],  # type: ignore[arg-type]
    )
    assert reveal(keys, forged) == ERASED  # type: ignore[arg-type]
    # the key destroyed: nothing opens, texts read erased and dates none
    keys.keys[patient.hex] = None
    assert open_value(keys, sealed) == {  # type: ignore[arg-type]
        "summary": ERASED,
        "prescriptions": [{"drug": ERASED, "dose_mg": 500}],
    }
    assert open_value(keys, born) is None  # type: ignore[arg-type]
    assert reveal(keys, line) == f"Referred ({ERASED})"  # type: ignore[arg-type]


@pytest.mark.parametrize("empty", ["", None, 0, False])
def test_empty_values_and_non_texts_are_left_as_they_are(empty: Any) -> None:
    patient = uuid4()
    assert seal_tree(AESGCM(os.urandom(32)), patient, empty) == empty
