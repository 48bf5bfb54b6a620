"""Audit benchmark: `jiayi audit verify` over the replay benchmark's log (1M events) in PostgreSQL.

    .venv/bin/python bench/audit.py --schema bench_replay_1m_sealed  # needs JIAYI_POSTGRES_URL

The log is the one ``make bench-replay`` generates and keeps (generated here the same way when
missing). A log recorded before the chain existed is chained once when the application opens
it (as an upgraded deployment is). Prints events/s of a full verification (digests, links,
seals) and its ratio to a raw read of the same rows (every column of the events, links included, read
from one snapshot with the same cursors, nothing computed) measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from masterkey import master_key_file

from audit.seals import Sealer, create_key, open_store
from audit.verify import PAGE, Source, verify
from jiayi.bootstrap import build_application
from jiayi.settings import Settings


def raw_read(settings: Settings) -> tuple[int, float]:
    """Every event row as stored (all columns, its link included), in the ranges verify
    reads, from one snapshot, nothing computed."""
    store = open_store(settings)
    began = time.perf_counter()
    n = 0
    try:
        with Source(store) as source:
            names = source.names
            query = (
                f"SELECT {names.position}, originator_id, originator_version, topic, state, "
                f"digest, hash FROM {names.events} WHERE {names.position} > %s "
                f"AND {names.position} <= %s "
                f"ORDER BY {names.position}"
            )
            last = source.last_position()
            after = 0
            while after < last:
                upto = min(after + PAGE, last)
                with store.conn.cursor(binary=True) as cur:
                    cur.execute(query, (after, upto))
                    n += len(cur.fetchall())
                after = upto
    finally:
        store.close()
    return n, time.perf_counter() - began


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--schema", default="bench_replay_1m_sealed")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not os.environ.get("JIAYI_POSTGRES_URL"):
        raise SystemExit("set JIAYI_POSTGRES_URL=postgresql://user@host:port/dbname")
    key_file = master_key_file(args.schema, create=False)
    if not key_file.exists():
        raise SystemExit(f"no master key file {key_file}: run `make bench-replay` first")
    settings = Settings(postgres_schema=args.schema, master_key_file=key_file)
    began = time.perf_counter()
    app = build_application(settings)  # chains a log recorded before the chain, once
    total = app.max_position()
    app.close()
    print(
        f"log: {total:,} events in schema {args.schema} (opened in {time.perf_counter() - began:.1f} s)"
    )
    if total < args.events:
        raise SystemExit(f"fewer than {args.events:,} events: run `make bench-replay` first")
    key_file = Path("var/bench/audit-seal-key.pem")
    key = create_key(key_file) if not key_file.exists() else None
    if key is None:
        from audit.seals import signing_key

        key = signing_key(settings.model_copy(update={"audit_key_file": key_file}))
    sealer = Sealer(
        settings.model_copy(update={"audit_seal_log": Path("var/bench/seals.jsonl")}), key
    )
    sealer.seal()
    sealer.close()

    best_raw = best_verify = 0.0
    for round_ in range(1, args.rounds + 1):
        n, seconds = raw_read(settings)
        raw = n / seconds
        store = open_store(settings)
        try:
            report = verify(store, public=key.public_key())
        finally:
            store.close()
        rate = report.events / report.seconds
        print(
            f"round {round_}: raw read {raw:>10,.0f} events/s   verify {rate:>10,.0f} events/s"
            f"   ({report.events:,} events, {report.seals} seals, ok={report.ok})"
        )
        if not report.ok:
            for f in report.findings[:10]:
                print(f"  {f.position} {f.kind} {f.detail}")
        best_raw, best_verify = max(best_raw, raw), max(best_verify, rate)
    print(f"raw read of the same rows:       {best_raw:>10,.0f} events/s")
    print(f"jiayi audit verify:              {best_verify:>10,.0f} events/s")
    print(f"ratio verify / raw read: {best_verify / best_raw:.2f}   (target: >= 100,000 events/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
