"""Write the golden history's files (by hand only; never part of the test suite).

    .venv/bin/python tests/golden/generate.py            # expectations only (records kept)
    .venv/bin/python tests/golden/generate.py --append   # records of steps added to the story
    .venv/bin/python tests/golden/generate.py --records  # all the records (first time only)

The stored records (``records.jsonl``) are the contract: once checked in they are never
regenerated, however the domain changes (an event class or parameter renamed, a class
version added): old events must keep loading. ``--records`` refuses to overwrite them.
``--append`` (after adding steps at the END of the story, e.g. for a new event class) tells
the whole story again and appends only the records past the checked-in ones; the story's
earlier records must still be the same events (topic, originator, version), while their
states may differ (they are now written by newer class versions, and are not kept).
Without either, the script rebuilds the expectations from the checked-in records: ``aggregates.json`` (each aggregate folded by the repository) and ``views.json``
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


def _tell(data_dir: Path) -> list[dict[str, object]]:
    """The story told into a fresh store: what it stored."""
    clock = history.Clock()
    app = build_application(_settings(data_dir / "story"), clock=clock)
    try:
        with clock.stamping():
            history.write_story(app, clock)
        return history.stored_records(app)
    finally:
        app.close()


def write_records(data_dir: Path) -> None:
    if history.RECORDS.exists() and history.RECORDS.stat().st_size:
        raise SystemExit(f"{history.RECORDS} exists: stored records are never regenerated")
    records = _tell(data_dir)
    with history.RECORDS.open("w", encoding="utf-8") as out:
        for r in records:
            out.write(history.json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(records)} records -> {history.RECORDS}")


def append_records(data_dir: Path) -> None:
    kept = history.read_records()
    told = _tell(data_dir)
    same = ("originator_id", "originator_version", "topic")
    for old, new in zip(kept, told, strict=False):
        if [old[k] for k in same] != [new[k] for k in same]:
            raise SystemExit(f"the story no longer begins with the stored records: {old} {new}")
    added = told[len(kept) :]
    with history.RECORDS.open("a", encoding="utf-8") as out:
        for r in added:
            out.write(history.json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
    print(f"{len(added)} records appended -> {history.RECORDS}")


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
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--records", action="store_true", help="write the stored records first")
    first.add_argument("--append", action="store_true", help="append the story's new records")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.records:
            write_records(Path(tmp))
        elif args.append:
            append_records(Path(tmp))
        write_expectations(Path(tmp))


if __name__ == "__main__":
    main()
