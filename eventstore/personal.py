"""Personal data as tokens: encrypted with the patient's key inside events, views and replays.

A personal value (a text or a date) is stored as a **token**, a JSON string::

    "\\x1e" kind base64url(patient id (16) | nonce (12) | ciphertext | tag (16)) "\\x1f"

``kind`` is ``s`` (text) or ``d`` (a date, ISO text); AES-256-GCM with the patient's data key
(:mod:`eventstore.keys`), the marker, kind and patient id as associated data. Views copy
tokens as they find them in events (so views and as-of replays hold ciphertext too) and the
queries open them for the reader that asked (:func:`reveal`), also inside text a view composed
around them (a timeline entry's summary). A token whose key is destroyed reads as
:data:`ERASED`. The control characters around a token never come from users (the HTTP and
Kafka boundaries refuse control characters).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from datetime import date
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from eventstore.keys import KeyRing

START, END = "\x1e", "\x1f"
#: What an erased (or unreadable) personal value reads as.
ERASED = "[erased]"
_AAD = b"jiayi.pii.v1\x00"
TOKEN = re.compile("\x1e([sd])([A-Za-z0-9_-]{59,})\x1f")
#: How a token starts in the stored JSON (orjson writes U+001E escaped).
STORED_MARK = b"\\u001e"
#: A token in the stored JSON up to its first 24 base64 characters (18 bytes: the patient's
#: id, then the nonce's first two).
STORED_SUBJECT = re.compile(rb"\\u001e[sd]([A-Za-z0-9_-]{24})")


def seal(aead: AESGCM, subject: UUID, kind: str, text: str) -> str:
    nonce = os.urandom(12)
    sealed = aead.encrypt(nonce, text.encode(), _AAD + kind.encode() + subject.bytes)
    raw = subject.bytes + nonce + sealed
    return START + kind + base64.urlsafe_b64encode(raw).decode().rstrip("=") + END


def seal_tree(aead: AESGCM, subject: UUID, value: Any) -> Any:
    """``value`` with every non-empty text and every date in it sealed."""
    kind = type(value)
    if kind is str:
        return seal(aead, subject, "s", value) if value else value
    if kind is date:
        return seal(aead, subject, "d", value.isoformat())
    if kind is dict:
        return {k: seal_tree(aead, subject, v) for k, v in value.items()}
    if kind is list:
        return [seal_tree(aead, subject, v) for v in value]
    return value


_URLSAFE = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"===", b"==", b"=")


def _raw(body: str) -> bytes:
    return binascii.a2b_base64(body.encode().translate(_URLSAFE) + _PADDING[len(body) % 4])


def _open(keyring: KeyRing, kind: str, raw: bytes) -> str | None:
    aead = keyring.aead(raw[:16].hex())
    if aead is None:
        return None
    try:
        return aead.decrypt(raw[16:28], raw[28:], _AAD + kind.encode() + raw[:16]).decode()
    except InvalidTag:
        return None


def open_match(keyring: KeyRing, match: re.Match[str]) -> str | None:
    """The text a token holds; ``None`` when its patient's key is gone (or it is damaged)."""
    return _open(keyring, match.group(1), _raw(match.group(2)))


def open_value(keyring: KeyRing, value: Any) -> Any:
    """A decoded event attribute with its tokens opened, for the domain: texts as texts,
    dates as dates; an erased text reads :data:`ERASED`, an erased date ``None``."""
    kind = type(value)
    if kind is str:
        if value.startswith(START):
            match = TOKEN.fullmatch(value)
            if match is not None:
                text = open_match(keyring, match)
                if match.group(1) == "d":
                    return None if text is None else date.fromisoformat(text)
                return ERASED if text is None else text
        return value
    if kind is dict:
        return {k: open_value(keyring, v) for k, v in value.items()}
    if kind is list:
        return [open_value(keyring, v) for v in value]
    return value


def _strings(value: Any, found: list[str]) -> None:
    kind = type(value)
    if kind is str:
        if START in value:
            found.append(value)
    elif kind is dict:
        for v in value.values():
            _strings(v, found)
    elif kind is list or kind is tuple:
        for v in value:
            _strings(v, found)


def stored_subjects(state: bytes, found: set[str]) -> None:
    """Add to ``found`` the patients (as key-table subjects, hex) whose tokens a stored JSON
    state holds, without decoding it."""
    if STORED_MARK in state:
        for m in STORED_SUBJECT.finditer(state):
            found.add(base64.urlsafe_b64decode(m.group(1))[:16].hex())


def reveal(keyring: KeyRing, value: Any) -> Any:
    """``value`` (a query's answer: rows, mappings, lists) with every token opened as text,
    also inside longer texts; erased ones read :data:`ERASED`. Keys erased meanwhile (by any
    process) are dropped first, then the patients' keys are loaded with one query; each
    distinct token is opened once."""
    texts: list[str] = []
    _strings(value, texts)
    if not texts:
        return value
    keyring.refresh()
    parsed: dict[str, tuple[str, bytes]] = {}
    for text in texts:
        for m in TOKEN.finditer(text):
            token = m.group(0)
            if token not in parsed:
                parsed[token] = (m.group(1), _raw(m.group(2)))
    keyring.load({raw[:16].hex() for _, raw in parsed.values()})
    opened = {token: _open(keyring, kind, raw) or ERASED for token, (kind, raw) in parsed.items()}

    def sub(text: str) -> str:
        found = opened.get(text)  # most often the whole value is one token
        return found if found is not None else TOKEN.sub(lambda m: opened[m.group(0)], text)

    return _replace(value, sub)


def _replace(value: Any, sub: Callable[[str], str]) -> Any:
    kind = type(value)
    if kind is str:
        return sub(value) if START in value else value
    if kind is dict:
        return {k: _replace(v, sub) for k, v in value.items()}
    if kind is list:
        return [_replace(v, sub) for v in value]
    if kind is tuple:
        return tuple(_replace(v, sub) for v in value)
    return value
