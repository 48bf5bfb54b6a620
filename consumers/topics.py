"""The exchange's Kafka names: one inbound and one outbound topic per partner organisation, and
the broker principal each partner authenticates as.

A partner writes only its inbound topic and reads only its outbound topic (ACLs, set by
``jiayi partners add``); the acting organisation of an inbound message is the one its topic
belongs to, never what the message claims.

    <prefix><organisation id>.in     partner -> jiayi   (the partner may only write)
    <prefix><organisation id>.out    jiayi -> partner   (the partner may only read)
    principal: User:partner-<organisation id>   (SCRAM-SHA-512 credential)
"""

from __future__ import annotations

import re
from uuid import UUID

#: The default ``JIAYI_PARTNER_TOPIC_PREFIX``.
DEFAULT_PREFIX = "jiayi.partner."
INBOUND_SUFFIX = ".in"
OUTBOUND_SUFFIX = ".out"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def inbound_topic(prefix: str, org_id: UUID) -> str:
    """Where partner ``org_id`` writes its events to jiayi."""
    return f"{prefix}{org_id}{INBOUND_SUFFIX}"


def outbound_topic(prefix: str, org_id: UUID) -> str:
    """Where jiayi writes the events partner ``org_id`` may receive."""
    return f"{prefix}{org_id}{OUTBOUND_SUFFIX}"


def inbound_pattern(prefix: str) -> str:
    """A regular expression matching every partner's inbound topic (for one subscription)."""
    return f"^{re.escape(prefix)}{_UUID}{re.escape(INBOUND_SUFFIX)}$"


def org_of_inbound(prefix: str, topic: str) -> UUID | None:
    """The organisation an inbound topic belongs to; None for any other topic."""
    found = re.fullmatch(f"{re.escape(prefix)}({_UUID}){re.escape(INBOUND_SUFFIX)}", topic)
    return UUID(found.group(1)) if found else None


def principal(org_id: UUID) -> str:
    """The SCRAM user name of partner ``org_id`` (its Kafka principal is ``User:<this>``)."""
    return f"partner-{org_id}"
