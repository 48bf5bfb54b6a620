"""The master key file a benchmark's store uses (personal data is always sealed with it).

``JIAYI_MASTER_KEY_FILE`` when set; otherwise ``var/bench/<name>.master.key`` in the working
tree (ignored by git), created on first use. One file per bench store: a store's data keys are
wrapped by the key that created them.
"""

from __future__ import annotations

import os
from pathlib import Path

from eventstore.keys import MasterKey

BENCH_DIR = Path(__file__).resolve().parents[1] / "var" / "bench"


def master_key_file(name: str, create: bool = True) -> Path:
    """The key file of bench store ``name`` (created when missing and ``create``)."""
    given = os.environ.get("JIAYI_MASTER_KEY_FILE", "").strip()
    if given:
        return Path(given)
    path = BENCH_DIR / f"{name}.master.key"
    if create and not path.exists():
        MasterKey.create(path)
    return path
