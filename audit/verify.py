"""``jiayi audit verify``: walk the log and its chain, and name every broken link.

The events, each with its link (columns ``digest`` and ``hash``), are read in position order
from one snapshot. For each row:

- no link: ``inserted`` (a row added outside the application);
- content not what its digest says: ``swapped`` when its state is the one recorded at another
  position (states exchanged between rows), otherwise ``changed`` (a value, a byte; or its
  aggregate, version or topic);
- a link that does not follow from the one before: the row was ``reordered`` (moved whole: its
  link is the one it was given at another position), the row before it was ``inserted`` with
  a forged link, rows before it were ``deleted`` (named by the hole they leave in their
  aggregate's versions), or its own hash was ``changed``;

then every seal (the database's, and the copies given with ``--seals``): a seal whose
signature does not verify with the deployment's public key is ``forged-seal``; one the chain
no longer matches is ``rewritten`` (the chain was recomputed without the key: the change lies
after the last seal that still matches); one past the end of the log means its tail was
``deleted``; one held elsewhere but missing from the database is ``seal-missing``.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from hashlib import sha256
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit.seals import Seal
from eventstore.chain import EVENT_PREFIX, GENESIS, covered, event_digest, link
from eventstore.recorders import Tables, tables
from projections.store import ViewStore

_Q = struct.Struct(">q")
PAGE = 20_000


@dataclass(frozen=True)
class Finding:
    position: int
    kind: str
    aggregate: str | None
    event_type: str | None
    detail: str


@dataclass
class Report:
    start: int
    end: int = 0
    events: int = 0
    seals: int = 0
    seconds: float = 0.0
    seals_trusted: bool = True
    #: rows of the read access log checked (``add_access_log``)
    access_rows: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def event_type(topic: str | None) -> str | None:
    return None if topic is None else topic.rsplit(":", 1)[-1]


@dataclass
class _Row:
    position: int
    oid: UUID
    version: int
    topic: str
    state: bytes
    digest: bytes


class Source:
    """Reads the events, the chain and the seals of one store within one snapshot, in ranges
    of positions.

    Event rows come as (position, what the digest covers after its prefix): on PostgreSQL the
    server concatenates aggregate id, version, topic length, topic and state
    (``uuid_send || int8send || int4send || convert_to || state``), so Python only hashes."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.names: Tables = tables(store.postgres)
        n = self.names
        if store.postgres:
            self._events = (
                f"SELECT {n.position}, uuid_send(originator_id) || int8send(originator_version)"
                " || int4send(octet_length(topic)) || convert_to(topic, 'UTF8') || state, "
                f"digest, hash FROM {n.events} WHERE {n.position} > %s AND {n.position} <= %s "
                f"ORDER BY {n.position}"
            )
        else:
            self._events = (
                f"SELECT {n.position}, originator_id, originator_version, topic, state, digest, "
                f"hash FROM {n.events} WHERE {n.position} > ? AND {n.position} <= ? "
                f"ORDER BY {n.position}"
            )

    def __enter__(self) -> Source:
        if self.store.postgres:
            self.store.conn.autocommit = False
            self.store.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            self.store.conn.execute("BEGIN")
            # a read transaction takes its snapshot at the first read
            self.store.conn.execute(f"SELECT 1 FROM {self.names.events} LIMIT 1").fetchall()
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.conn.execute("ROLLBACK")
        if self.store.postgres:
            self.store.conn.autocommit = True

    def last_position(self) -> int:
        n = self.names
        row = self.store.conn.execute(f"SELECT max({n.position}) FROM {n.events}").fetchone()
        return int(row[0] or 0)

    def before(self, start: int) -> tuple[bytes, bytes]:
        """The stored hashes of the last two links at or before ``start``."""
        rows = self.store.conn.execute(
            self.store.sql(
                f"SELECT hash FROM {self.names.events} WHERE {self.names.position} <= ? "
                f"AND hash IS NOT NULL ORDER BY {self.names.position} DESC LIMIT 2"
            ),
            (start,),
        ).fetchall()
        hashes = [bytes(r[0]) for r in rows] + [GENESIS, GENESIS]
        return hashes[0], hashes[1]

    def events(self, after: int, upto: int) -> list[tuple[int, bytes, Any, Any]]:
        """(position, digested bytes after the prefix, digest, hash) of the events in
        ``(after, upto]``."""
        if self.store.postgres:
            with self.store.conn.cursor(binary=True) as cur:
                cur.execute(self._events, (after, upto))
                return cur.fetchall()
        return [
            (r[0], covered(bytes.fromhex(r[1]), r[2], r[3], bytes(r[4])), r[5], r[6])
            for r in self.store.conn.execute(self._events, (after, upto)).fetchall()
        ]

    def version_holes(self, limit: int = 20) -> list[tuple[UUID, int, int]]:
        """Aggregates missing versions: (aggregate, first missing, last missing)."""
        n = self.names
        rows = self.store.conn.execute(
            self.store.sql(
                "SELECT originator_id, prev, originator_version FROM (SELECT originator_id, "
                "originator_version, coalesce(lag(originator_version) OVER (PARTITION BY "
                f"originator_id ORDER BY originator_version), 0) AS prev FROM {n.events}) AS t "
                "WHERE originator_version <> prev + 1 LIMIT ?"
            ),
            (limit,),
        ).fetchall()
        return [(_uuid(r[0]), int(r[1]) + 1, int(r[2]) - 1) for r in rows]

    def event_rows(self, positions: Sequence[int]) -> dict[int, _Row]:
        """The events at ``positions``, whole (for what is wrong with them)."""
        n = self.names
        found: dict[int, _Row] = {}
        for i in range(0, len(positions), 500):
            part = list(positions[i : i + 500])
            marks = ", ".join("?" * len(part))
            for r in self.store.conn.execute(
                self.store.sql(
                    f"SELECT {n.position}, originator_id, originator_version, topic, state "
                    f"FROM {n.events} WHERE {n.position} IN ({marks})"
                ),
                part,
            ).fetchall():
                oid, state = _uuid(r[1]), bytes(r[4])
                found[int(r[0])] = _Row(
                    int(r[0]), oid, r[2], r[3], state, event_digest(oid, r[2], r[3], state)
                )
        return found

    def link_rows(self, positions: Sequence[int]) -> dict[int, tuple[UUID, int, str, bytes]]:
        """(aggregate, version, topic, digest) of the rows at ``positions``."""
        found: dict[int, tuple[UUID, int, str, bytes]] = {}
        for i in range(0, len(positions), 500):
            part = list(positions[i : i + 500])
            marks = ", ".join("?" * len(part))
            for r in self.store.conn.execute(
                self.store.sql(
                    f"SELECT {self.names.position}, originator_id, originator_version, topic, "
                    f"digest FROM {self.names.events} WHERE {self.names.position} IN ({marks}) "
                    "AND digest IS NOT NULL"
                ),
                part,
            ).fetchall():
                found[int(r[0])] = (_uuid(r[1]), int(r[2]), r[3], bytes(r[4]))
        return found

    def seals(self) -> list[Seal]:
        return [
            Seal(int(r[0]), bytes(r[1]), r[2], r[3], bytes(r[4]))
            for r in self.store.conn.execute(
                "SELECT position, hash, sealed_at, key_id, signature "
                f"FROM {self.names.seals} ORDER BY id"
            ).fetchall()
        ]


def _uuid(value: Any) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))


def verify(
    store: ViewStore,
    *,
    start: int = 0,
    stop: int | None = None,
    elsewhere: Sequence[Seal] = (),
    public: Ed25519PublicKey | None = None,
) -> Report:
    """Verify positions after ``start`` (up to ``stop``) against the chain and the seals."""
    began = time.perf_counter()
    report = Report(start=start, seals_trusted=public is not None)
    with Source(store) as source:
        stored_seals = source.seals()
        seals = _merge_seals(stored_seals, elsewhere, report)
        wanted = {s.position for s in seals}
        hashes_at = _walk(source, start, stop, wanted, seals, report)
    report.seconds = time.perf_counter() - began
    _check_seals(seals, report, public, stop, hashes_at)
    report.findings.sort(key=lambda f: (f.position, f.kind))
    return report


def _merge_seals(stored: list[Seal], elsewhere: Sequence[Seal], report: Report) -> list[Seal]:
    known = {s.signature for s in stored}
    merged = list(stored)
    for s in elsewhere:
        if s.signature not in known:
            known.add(s.signature)
            merged.append(s)
            report.findings.append(
                Finding(
                    s.position,
                    "seal-missing",
                    None,
                    None,
                    f"the seal of {s.sealed_at} is held elsewhere but gone from the database",
                )
            )
    return sorted(merged, key=lambda s: (s.position, s.sealed_at))


def _walk(
    source: Source,
    start: int,
    stop: int | None,
    wanted: set[int],
    seals: list[Seal],
    report: Report,
) -> dict[int, bytes]:
    """Walk the rows; the stored hashes at the ``wanted`` positions (the seals')."""
    link_findings: list[Finding] = []
    previous, before_previous = source.before(start)
    last = source.last_position() if stop is None else stop
    mismatched: list[int] = []
    inserted: list[int] = []
    # rows whose link does not follow: position -> (digest, hash, stored hash before it)
    unlinked: dict[int, tuple[bytes, bytes, bytes]] = {}
    # a link that did not follow: (position, its expected hash, previous position)
    pending: tuple[int, bytes, int] | None = None
    previous_position = start
    hashes_at: dict[int, bytes] = {}
    count = 0
    end = start
    pack = _Q.pack
    after = start
    while after < last:
        upto = min(after + PAGE, last)
        rows = source.events(after, upto)
        after = upto
        for position, blob, digest, hash_ in rows:
            count += 1
            end = position
            if digest is None or hash_ is None:
                inserted.append(position)
                continue
            if sha256(EVENT_PREFIX + blob).digest() != digest:
                mismatched.append(position)
            expected = sha256(previous + pack(position) + digest).digest()
            if pending is not None or expected != hash_:
                if expected != hash_:
                    unlinked[position] = (digest, hash_, previous)
                expected, pending = _unlinked(
                    link_findings,
                    pending,
                    position,
                    digest,
                    hash_,
                    expected,
                    before_previous,
                    previous_position,
                )
            if position in wanted:
                hashes_at[position] = hash_
            before_previous, previous, previous_position = previous, hash_, position
    if pending is not None:
        link_findings.append(_gap(pending[2], pending[0]))
    report.events = count
    report.end = end
    report.seals = len(seals)
    findings = report.findings
    moved = _reordered(unlinked, findings, source)
    explained = {p for q in moved for p in (q, q + 1)}
    findings.extend(f for f in link_findings if f.position not in explained)
    _name_deleted(source, findings)
    for position in inserted:
        row = source.event_rows([position])[position]
        findings.append(
            Finding(
                position,
                "inserted",
                str(row.oid),
                event_type(row.topic),
                "a stored event the chain never recorded (added outside the application)",
            )
        )
    _classify(source, [p for p in mismatched if p not in moved], findings)
    return hashes_at


def _reordered(
    unlinked: dict[int, tuple[bytes, bytes, bytes]], findings: list[Finding], source: Source
) -> set[int]:
    """Rows moved whole to another position (with their digest and hash): each one's hash
    is the link it was given at the position it came from."""
    moved: set[int] = set()
    if len(unlinked) > 2_000:
        return moved
    for p, (digest, hash_, _) in unlinked.items():
        for q, (_, _, before_q) in unlinked.items():
            if q != p and link(before_q, q, digest) == hash_:
                row = source.event_rows([p]).get(p)
                findings.append(
                    Finding(
                        p,
                        "reordered",
                        None if row is None else str(row.oid),
                        None if row is None else event_type(row.topic),
                        f"the event recorded at position {q} now stands here",
                    )
                )
                moved.add(p)
                break
    return moved


def _name_deleted(source: Source, findings: list[Finding]) -> None:
    """Rows deleted with their links leave a gap in the chain and a hole in their aggregate's
    versions: name the aggregate when there is one hole for one gap."""
    gaps = [i for i, f in enumerate(findings) if f.kind == "deleted" and f.aggregate is None]
    if not gaps:
        return
    holes = source.version_holes()
    if len(gaps) == 1 and len(holes) == 1:
        f = findings[gaps[0]]
        oid, first, last_missing = holes[0]
        versions = (
            f"version {first}" if first == last_missing else f"versions {first}-{last_missing}"
        )
        findings[gaps[0]] = Finding(
            f.position, f.kind, str(oid), None, f"{f.detail}; aggregate {oid} lost {versions}"
        )
    elif holes:
        listed = ", ".join(f"{oid} from version {first}" for oid, first, _ in holes[:5])
        for i in gaps:
            f = findings[i]
            findings[i] = Finding(
                f.position, f.kind, None, None, f"{f.detail}; aggregates missing versions: {listed}"
            )


def _unlinked(
    findings: list[Finding],
    pending: tuple[int, bytes, int] | None,
    position: int,
    digest: bytes,
    hash_: bytes,
    expected: bytes,
    before_previous: bytes,
    previous_position: int,
) -> tuple[bytes, tuple[int, bytes, int] | None]:
    """What a link that does not follow from the one before says (the slow path)."""
    if pending is not None:
        at, pending_expected, pending_previous = pending
        pending = None
        if expected == hash_:
            findings.append(_gap(pending_previous, at))
        elif link(pending_expected, position, digest) == hash_:
            findings.append(
                Finding(at, "changed", None, None, "its link hash in the chain was edited")
            )
            expected = hash_  # the row after it followed from the right value
        else:
            findings.append(
                Finding(at, "changed", None, None, "its link does not follow the one before")
            )
    if expected != hash_:
        if link(before_previous, position, digest) == hash_:
            findings.append(
                Finding(
                    previous_position,
                    "inserted",
                    None,
                    None,
                    "a row was inserted into the chain with a forged link",
                )
            )
        else:
            pending = (position, expected, previous_position)
    return expected, pending


def _gap(after: int, at: int) -> Finding:
    if at - after == 2:
        where = f"position {after + 1}"
    else:
        where = f"positions after {after} and before {at}"
    return Finding(
        after + 1,
        "deleted",
        None,
        None,
        f"events and their links were deleted: {where} (the link at {at} no longer follows)",
    )


def _classify(source: Source, positions: list[int], findings: list[Finding]) -> None:
    """Rows whose state or identity is not what their digest says: moved from another row
    (``swapped``, states exchanged) or ``changed``."""
    recorded = source.link_rows(positions)
    rows = source.event_rows(positions)
    mismatched = [rows[p] for p in positions]
    by_digest = {recorded[r.position][3]: r.position for r in mismatched}
    pairable = len(mismatched) <= 2_000
    for row in mismatched:
        oid, version, topic, _ = recorded[row.position]
        moved_from = by_digest.get(row.digest)
        if moved_from is not None and moved_from != row.position:
            findings.append(
                Finding(
                    row.position,
                    "reordered",
                    str(row.oid),
                    event_type(row.topic),
                    f"the event recorded at position {moved_from} now stands here",
                )
            )
            continue
        swapped = None
        if pairable:
            for other in mismatched:
                if other is row:
                    continue
                o_oid, o_version, o_topic, o_digest = recorded[other.position]
                if event_digest(o_oid, o_version, o_topic, row.state) == o_digest:
                    swapped = other.position
                    break
        if swapped is not None:
            findings.append(
                Finding(
                    row.position,
                    "swapped",
                    str(oid),
                    event_type(topic),
                    f"its state is the one recorded at position {swapped}",
                )
            )
            continue
        if (row.oid, row.version, row.topic) != (oid, version, topic):
            detail = (
                f"recorded as aggregate {oid} version {version} {event_type(topic)}; "
                f"now names aggregate {row.oid} version {row.version} {event_type(row.topic)}"
            )
        else:
            detail = "its stored state is not the one recorded"
        findings.append(Finding(row.position, "changed", str(oid), event_type(topic), detail))


def _check_seals(
    seals: list[Seal],
    report: Report,
    public: Ed25519PublicKey | None,
    stop: int | None,
    hashes_at: dict[int, bytes],
) -> None:
    last_good = report.start
    rewritten_reported = False
    for seal in seals:
        if public is not None and not seal.valid(public):
            report.findings.append(
                Finding(
                    seal.position,
                    "forged-seal",
                    None,
                    None,
                    f"the seal of {seal.sealed_at} is not signed by the deployment's key",
                )
            )
            continue
        if seal.position <= report.start or (stop is not None and seal.position > stop):
            continue
        if seal.position > report.end and stop is None:
            report.findings.append(
                Finding(
                    report.end + 1,
                    "deleted",
                    None,
                    None,
                    f"the log ends at position {report.end}, but the seal of {seal.sealed_at} "
                    f"covers position {seal.position}: events after {report.end} were deleted",
                )
            )
            continue
        found = hashes_at.get(seal.position)
        if found is None:
            continue  # its link was deleted: reported by the walk
        if found == seal.hash:
            last_good = seal.position
        elif not rewritten_reported:
            rewritten_reported = True
            report.findings.append(
                Finding(
                    last_good + 1,
                    "rewritten",
                    None,
                    None,
                    f"the chain was recomputed without the signing key between positions "
                    f"{last_good + 1} and {seal.position}: it no longer matches the seal of "
                    f"{seal.sealed_at} at position {seal.position}",
                )
            )


def add_access_log(report: Report, settings: Any) -> None:
    """The read access log's own chain (``audit.access``), checked too: its broken places join
    the report as ``access-changed``, ``access-deleted`` and ``access-link`` (positions in the
    access log, not in the event log)."""
    from audit.access import verify_access_log

    check = verify_access_log(settings)
    report.access_rows = check.rows
    for b in check.broken:
        report.findings.append(Finding(b.position, f"access-{b.kind}", None, None, str(b)))


# --- recorded verifications (the auditors' route and page) -----------------------------------


def record(store: ViewStore, report: Report, requested_by: str, started_at: datetime) -> int:
    names = tables(store.postgres)
    data = report.to_json()
    data["findings"] = data["findings"][:1000]
    store.execute(
        f"INSERT INTO {names.verifications} (started_at, finished_at, requested_by, "
        "from_position, to_position, events, ok, report) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            started_at.isoformat(),
            datetime.now(UTC).isoformat(),
            requested_by,
            report.start,
            report.end,
            report.events,
            1 if report.ok else 0,
            json.dumps(data),
        ),
    )
    row = store.one(f"SELECT max(id) AS id FROM {names.verifications}")
    return int(row["id"]) if row else 0


def last(store: ViewStore) -> dict[str, Any] | None:
    """The latest recorded verification (its report as recorded)."""
    names = tables(store.postgres)
    row = store.one(
        f"SELECT id, started_at, finished_at, requested_by, from_position, to_position, events, "
        f"ok, report FROM {names.verifications} ORDER BY id DESC LIMIT 1"
    )
    if row is None:
        return None
    report = json.loads(row.pop("report") or "{}")
    row["ok"] = bool(row["ok"])
    row["findings"] = report.get("findings", [])
    row["seals"] = report.get("seals", 0)
    row["seals_trusted"] = report.get("seals_trusted", False)
    row["seconds"] = report.get("seconds", 0.0)
    return row
