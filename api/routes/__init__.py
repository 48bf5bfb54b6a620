"""One module per resource; each exposes ``router``."""

from __future__ import annotations

from api.routes import (
    audit,
    contracts,
    health,
    kpis,
    organisations,
    patients,
    quotas,
    referrals,
    teams,
    transfers,
    verification,
    worklists,
)

MODULES = (
    health,
    organisations,
    teams,
    patients,
    transfers,
    contracts,
    referrals,
    quotas,
    worklists,
    kpis,
    verification,
    audit,
)
