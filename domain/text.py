"""What text the system takes in: no control characters (pure; used wherever input enters).

Refused: the C0 controls (U+0000-U+001F: NUL, which PostgreSQL's ``text`` cannot hold, and
U+001E/U+001F, which mark the personal-data tokens inside the system, ``eventstore/personal``),
DEL (U+007F), the C1 controls (U+0080-U+009F) and lone surrogates (U+D800-U+DFFF: not text,
they cannot be encoded to be stored). Kept: tab, line feed and carriage return, the ordinary
whitespace of free text pasted from elsewhere (notes, summaries, addresses).
"""

from __future__ import annotations

import re

#: What no text may hold: C0 but the ordinary whitespace (tab, line feed, carriage return),
#: DEL, C1, and lone surrogates.
UNWANTED = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def first_unwanted(text: str) -> tuple[int, str] | None:
    """The position and character of the first character ``text`` may not hold, if any."""
    found = UNWANTED.search(text)
    return None if found is None else (found.start(), found.group())


def unwanted_reason(text: str) -> str | None:
    """Why ``text`` is refused (one line naming the character and where), or None."""
    found = first_unwanted(text)
    if found is None:
        return None
    position, character = found
    return (
        f"character U+{ord(character):04X} at position {position} is not allowed: control "
        "characters (other than tab, line feed and carriage return) and lone surrogates are "
        "refused"
    )
