"""Who may do what on the exchange's Kafka brokers: SCRAM users, topics and ACLs.

Everything goes through the brokers' admin API as the administrator (``jiayi partners``). The
brokers deny what no ACL allows (``allow.everyone.if.no.acl.found=false``). The layout, all
``ALLOW`` from any host, every topic ACL on one topic (``LITERAL``):

- ``User:partner-<org>``: WRITE, DESCRIBE on ``<prefix><org>.in``; READ, DESCRIBE on
  ``<prefix><org>.out``; READ on the consumer groups whose names start with ``partner-<org>``
  (``PREFIXED``). Nothing else: no other partner's topics, no topic creation.
- ``User:jiayi-consumer`` (``jiayi consume``): READ, DESCRIBE on every partner's ``.in`` topic
  (added by ``partners add``; its pattern subscription sees only these); WRITE, DESCRIBE on
  ``dead_letter_topic``; READ on the group ``consumer_group``.
- ``User:jiayi-relay`` (``jiayi publish``): WRITE, DESCRIBE on every partner's ``.out`` topic
  (added by ``partners add``; an organisation receives once it is a partner) and on the
  regional ``platform_topic`` when one is configured.

The consumer's and the relay's per-partner grants are per topic rather than one ``PREFIXED`` ACL
on the prefix: a prefix ACL cannot say "ending in ``.in``", so it would let the consumer read the
outbound topics and the relay write the inbound ones (forging a partner's messages).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from consumers.topics import inbound_topic, outbound_topic, principal
from jiayi.settings import Settings

CONSUMER = "jiayi-consumer"
RELAY = "jiayi-relay"
PARTNER_PREFIX = "partner-"
SERVICES = (CONSUMER, RELAY)


class AccessError(RuntimeError):
    """The broker refused an administrative change (message says which and why)."""


@dataclass(frozen=True)
class Credentials:
    """What a principal connects with; the password is shown once, never stored by jiayi."""

    username: str
    password: str


@dataclass(frozen=True)
class Partner:
    org: UUID
    username: str
    inbound: str
    outbound: str
    inbound_exists: bool = True
    outbound_exists: bool = True


def new_password() -> str:
    return secrets.token_urlsafe(24)


def _acl(user: str, operation: str, kind: str, name: str, prefixed: bool = False) -> Any:
    from kafka.admin import (
        ACL,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourceType,
    )

    pattern = ACLResourcePatternType.PREFIXED if prefixed else ACLResourcePatternType.LITERAL
    return ACL(
        principal=f"User:{user}",
        host="*",
        operation=ACLOperation[operation],
        permission_type=ACLPermissionType.ALLOW,
        resource_pattern=ResourcePattern(ResourceType[kind], name, pattern),
    )


def partner_acls(settings: Settings, org: UUID) -> list[Any]:
    """The partner's own grants (see the module's docstring)."""
    user = principal(org)
    inbound = inbound_topic(settings.partner_topic_prefix, org)
    outbound = outbound_topic(settings.partner_topic_prefix, org)
    return [
        _acl(user, "WRITE", "TOPIC", inbound),
        _acl(user, "DESCRIBE", "TOPIC", inbound),
        _acl(user, "READ", "TOPIC", outbound),
        _acl(user, "DESCRIBE", "TOPIC", outbound),
        _acl(user, "READ", "GROUP", user, prefixed=True),
    ]


def exchange_acls(settings: Settings, org: UUID) -> list[Any]:
    """What jiayi's consumer and relay need on one partner's topics."""
    inbound = inbound_topic(settings.partner_topic_prefix, org)
    outbound = outbound_topic(settings.partner_topic_prefix, org)
    return [
        _acl(CONSUMER, "READ", "TOPIC", inbound),
        _acl(CONSUMER, "DESCRIBE", "TOPIC", inbound),
        _acl(RELAY, "WRITE", "TOPIC", outbound),
        _acl(RELAY, "DESCRIBE", "TOPIC", outbound),
    ]


def service_acls(settings: Settings) -> list[Any]:
    """The consumer's and relay's grants on the shared topics (the dead letters, the platform
    topic when configured) and the consumer group."""
    acls = [
        _acl(CONSUMER, "WRITE", "TOPIC", settings.dead_letter_topic),
        _acl(CONSUMER, "DESCRIBE", "TOPIC", settings.dead_letter_topic),
        _acl(CONSUMER, "READ", "GROUP", settings.consumer_group),
        # seals of the hash chain (audit.seals): written by the relay, read by auditors
        _acl(RELAY, "WRITE", "TOPIC", settings.audit_topic),
        _acl(RELAY, "DESCRIBE", "TOPIC", settings.audit_topic),
    ]
    if settings.platform_topic:
        acls += [
            _acl(RELAY, "WRITE", "TOPIC", settings.platform_topic),
            _acl(RELAY, "DESCRIBE", "TOPIC", settings.platform_topic),
        ]
    return acls


def _create_acls(admin: Any, acls: list[Any]) -> None:
    result = admin.create_acls(acls)
    failed = result.get("failed") or []
    if failed:
        raise AccessError(f"the broker refused {len(failed)} ACL(s): {failed[0]}")


def _scram_users(admin: Any) -> set[str]:
    return set(admin.describe_user_scram_credentials() or {})


def _set_password(admin: Any, user: str, password: str) -> None:
    from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramMechanism.SCRAM_SHA_512, password)]
    )
    if errors.get(user):
        raise AccessError(f"could not set the SCRAM credential of {user}: {errors[user]}")


def _delete_user(admin: Any, user: str) -> None:
    from kafka.admin import ScramMechanism, UserScramCredentialDeletion

    errors = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512)]
    )
    if errors.get(user) and "not found" not in str(errors[user]).lower():
        raise AccessError(f"could not delete the SCRAM credential of {user}: {errors[user]}")


def _ensure_topics(admin: Any, settings: Settings, names: list[str]) -> None:
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    existing = set(admin.list_topics())
    for name in names:
        if name not in existing:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, settings.kafka_partitions, 1)])


def setup_services(
    admin: Any,
    settings: Settings,
    rotate: bool = False,
    passwords: dict[str, str] | None = None,
) -> list[Credentials]:
    """The shared topics, the consumer's and relay's ACLs, and their SCRAM users: created when
    missing (or all replaced with ``rotate``), or set to ``passwords`` (user -> password, as
    a deployment that keeps them in its secrets does). Returns the credentials made now."""
    shared = [settings.dead_letter_topic, settings.audit_topic]
    if settings.platform_topic:
        shared.append(settings.platform_topic)
    _ensure_topics(admin, settings, shared)
    _create_acls(admin, service_acls(settings))
    existing = _scram_users(admin)
    made = []
    for user in SERVICES:
        if passwords is not None:
            _set_password(admin, user, passwords[user])
        elif rotate or user not in existing:
            made.append(Credentials(user, new_password()))
            _set_password(admin, user, made[-1].password)
    return made


def add_partner(admin: Any, settings: Settings, org: UUID) -> Credentials:
    """The partner's SCRAM user (a new random password), topics and ACLs, and the consumer's
    and relay's grants on its topics. A partner that already exists is refused (rotate)."""
    user = principal(org)
    if user in _scram_users(admin):
        raise AccessError(f"{user} exists already (use `jiayi partners rotate {org}`)")
    prefix = settings.partner_topic_prefix
    _ensure_topics(admin, settings, [inbound_topic(prefix, org), outbound_topic(prefix, org)])
    _create_acls(admin, partner_acls(settings, org) + exchange_acls(settings, org))
    credentials = Credentials(user, new_password())
    _set_password(admin, user, credentials.password)
    return credentials


def rotate_partner(admin: Any, org: UUID) -> Credentials:
    """A new password for an existing partner; the old one stops working for new connections."""
    user = principal(org)
    if user not in _scram_users(admin):
        raise AccessError(f"{user} is not a partner (use `jiayi partners add {org}`)")
    credentials = Credentials(user, new_password())
    _set_password(admin, user, credentials.password)
    return credentials


def remove_partner(admin: Any, settings: Settings, org: UUID) -> None:
    """Revoke the partner's access: its ACLs (every request it makes from now on is refused)
    and its SCRAM credential (it can no longer connect). Its topics are kept, for audit and so
    that the consumer can finish what the partner wrote; so are jiayi's grants on them."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )

    user = principal(org)
    everything = ACLFilter(
        principal=f"User:{user}",
        host="*",
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    for _filter, _deleted, error in admin.delete_acls([everything]):
        if error is not None and getattr(error, "errno", None):
            raise AccessError(f"could not delete the ACLs of {user}: {error}")
    _delete_user(admin, user)


def list_partners(admin: Any, settings: Settings) -> list[Partner]:
    """Partners known to the broker (SCRAM users ``partner-<org>``), with their topics."""
    topics = set(admin.list_topics())
    prefix = settings.partner_topic_prefix
    out = []
    for user in sorted(_scram_users(admin)):
        if not user.startswith(PARTNER_PREFIX):
            continue
        try:
            org = UUID(user.removeprefix(PARTNER_PREFIX))
        except ValueError:
            continue
        inbound, outbound = inbound_topic(prefix, org), outbound_topic(prefix, org)
        out.append(Partner(org, user, inbound, outbound, inbound in topics, outbound in topics))
    return out


def client_settings(settings: Settings, org: UUID, credentials: Credentials) -> dict[str, str]:
    """What the partner configures its Kafka client with (Java client property names)."""
    prefix = settings.partner_topic_prefix
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{credentials.username}" password="{credentials.password}";'
    )
    return {
        "bootstrap.servers": settings.kafka_bootstrap or "",
        "security.protocol": settings.kafka_security_protocol,
        "sasl.mechanism": settings.kafka_sasl_mechanism,
        "sasl.username": credentials.username,
        "sasl.password": credentials.password,
        "sasl.jaas.config": jaas,
        "inbound.topic": inbound_topic(prefix, org),
        "outbound.topic": outbound_topic(prefix, org),
        "group.id.prefix": credentials.username,
    }
