"""Write the golden history's files (by hand only; never part of the test suite).

    .venv/bin/python tests/golden/generate.py            # expectations only (records kept)
    .venv/bin/python tests/golden/generate.py --records  # the stored records too (first time)

The stored records (``records.jsonl``) are the contract: once checked in they are never
regenerated, however the domain changes (an event class or parameter renamed, a class
version added): old events must keep loading. Regenerating them needs ``--records`` and an
empty file, on purpose. Without it the script rebuilds the expectations from the checked-in
records: ``aggregates.json`` (each aggregate folded by the repository) and ``views.json``
(every view table after a rebuild). Regenerate those only for an intended change of what
aggregates or views hold, and read the diff.

The story (``tests/golden/history.py``) runs through the use cases on the embedded SQLite
store without a cipher, with a fixed clock that also stamps the events, and chosen ids.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from jiayi.bootstrap import build_application, view_location
from jiayi.settings import Settings
from projections.events import LogReader
from projections.runner import rebuild
from tests.golden import history


def _settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, postgres_url=None, cipher_key=None, timezone="Asia/Shanghai")


def write_records(data_dir: Path) -> None:
    if history.RECORDS.exists() and history.RECORDS.stat().st_size:
        raise SystemExit(f"{history.RECORDS} exists: stored records are never regenerated")
    clock = history.Clock()
    app = build_application(_settings(data_dir / "story"), clock=clock)
    try:
        with clock.stamping():
            history.write_story(app, clock)
        records = history.stored_records(app)
    finally:
        app.close()
    with history.RECORDS.open("w", encoding="utf-8") as out:
        for r in records:
            out.write(history.json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(records)} records -> {history.RECORDS}")


def write_expectations(data_dir: Path) -> None:
    records = history.read_records()
    settings = _settings(data_dir / "replay")
    app = build_application(settings)
    store = view_location(settings).open()
    try:
        history.insert_records(app, records)
        states = history.folded(app, records)
        rebuild(store, LogReader(app), pace_gc=False)
        views = history.view_rows(store)
    finally:
        store.close()
        app.close()
    history.AGGREGATES.write_text(history.dumps(states), encoding="utf-8")
    history.VIEWS.write_text(history.dumps(views), encoding="utf-8")
    print(f"{len(states)} aggregates -> {history.AGGREGATES}")
    print(f"{sum(map(len, views.values()))} view rows -> {history.VIEWS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", action="store_true", help="write the stored records first")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.records:
            write_records(Path(tmp))
        write_expectations(Path(tmp))


if __name__ == "__main__":
    main()
