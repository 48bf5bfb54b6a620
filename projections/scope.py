"""What a reader may see, as SQL over the views: one fragment per resource, built from care
relationships (:mod:`projections.relations`), never from roles.

Every query in :mod:`projections.views` restricts its rows with these fragments and nothing
else, so the rule for a resource is written once:

==================  ===========================================================================
resource            an organisation sees it when
==================  ===========================================================================
registry entry,     it has an active ``home`` relation (the patient's center) or an active
search             ``referral`` relation (a hospital the patient is referred to)
timeline entries    all of them with an active ``home`` relation; else the entries of the
                    referrals and returns it is or was party to, the bookings on its own
                    quotas, and the transfer steps it took itself
referral            it sent it (the referral's center), it is or was addressed to it, or it
                    holds the patient's active ``home`` relation
quota               it publishes it, or it is reserved for it or for its district
booking details     it made it (the booking's center) or it runs the quota (the hospital);
                    others who see the quota see counts only
team, worklist,     it is that organisation (a team: of that center)
KPIs
==================  ===========================================================================

A district coordinator sees what the centers of its district see (patients through their
``home`` relation); an auditor (``everything``) sees all. What no fragment admits reads as
absent (the API answers 404 the same way for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from projections.queries import Scope

#: An SQL condition and its parameters (``?`` marks, in order).
Fragment = tuple[str, list[Any]]

ALL: Fragment = ("1 = 1", [])
NOTHING: Fragment = ("1 = 0", [])


def _relation(patient: str, *, kinds: tuple[str, ...], active: bool, org: bool = True) -> str:
    kinds_sql = ", ".join(f"'{k}'" for k in kinds)
    return (
        f"EXISTS (SELECT 1 FROM v_relations rel WHERE rel.patient_id = {patient} "
        f"AND rel.kind IN ({kinds_sql})"
        + (" AND rel.ended_at IS NULL" if active else "")
        + (" AND rel.org_id = ?" if org else "")
        + ")"
    )


def _home_in_district(patient: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM v_relations rel JOIN v_orgs ro ON ro.id = rel.org_id "
        f"WHERE rel.patient_id = {patient} AND rel.kind = 'home' AND rel.ended_at IS NULL "
        "AND ro.district = ?)"
    )


def _in_district(org_column: str) -> str:
    return f"EXISTS (SELECT 1 FROM v_orgs so WHERE so.id = {org_column} AND so.district = ?)"


@dataclass(frozen=True)
class Access:
    """The fragments for one reader. Column arguments name the row's columns in the caller's
    query (``p.id``, ``t.referral_id`` ...)."""

    scope: Scope

    @property
    def _org(self) -> str | None:
        return self.scope.org_id.hex if self.scope.org_id is not None else None

    @property
    def _district(self) -> str | None:
        return self.scope.district if self.scope.org_id is None else None

    def _choose(self, org: Fragment, district: Fragment) -> Fragment:
        if self.scope.everything:
            return ALL
        if self._org is not None:
            return org
        if self._district is not None:
            return district
        return NOTHING

    # --- patients -----------------------------------------------------------------------

    def registry(self, patient: str = "p.id") -> Fragment:
        """Registry entries (name, national id, tags, contract) and search results."""
        return self._choose(
            (_relation(patient, kinds=("home", "referral"), active=True), [self._org]),
            (_home_in_district(patient), [self._district]),
        )

    def related(self, patient: str = "p.id") -> Fragment:
        """Patients the reader has or had any relation with: their timeline is not absent to
        it (though it may show only the reader's own part)."""
        return self._choose(
            (_relation(patient, kinds=("home", "referral", "return", "transfer"), active=False),
             [self._org]),
            (_home_in_district(patient), [self._district]),
        )  # fmt: skip

    def timeline(self, entry: str = "t") -> Fragment:
        """Timeline entries (alias ``entry`` of ``v_timeline``)."""
        org = self._org
        return self._choose(
            (
                f"({_relation(f'{entry}.patient_id', kinds=('home',), active=True)} "
                f"OR {entry}.referral_id IN (SELECT rel.source_id FROM v_relations rel "
                f"WHERE rel.patient_id = {entry}.patient_id AND rel.org_id = ? "
                "AND rel.kind IN ('referral', 'return')) "
                f"OR ({entry}.booking_id IS NOT NULL AND {entry}.hospital_id = ?) "
                f"OR ({entry}.kind LIKE 'transfer.%' AND {entry}.org_id = ?))",
                [org, org, org, org],
            ),
            (_home_in_district(f"{entry}.patient_id"), [self._district]),
        )

    def obligation(self, obligation: str = "o") -> Fragment:
        """Follow-up obligations (alias ``obligation`` of ``v_obligations``), read as the
        timeline entries about them: all of a patient's by the home center (and its
        district); a hospital only those of its own referral's or return's loop."""
        org = self._org
        return self._choose(
            (
                f"({_relation(f'{obligation}.patient_id', kinds=('home',), active=True)} "
                f"OR {obligation}.source_id IN (SELECT rel.source_id FROM v_relations rel "
                f"WHERE rel.patient_id = {obligation}.patient_id AND rel.org_id = ? "
                "AND rel.kind IN ('referral', 'return')))",
                [org, org],
            ),
            (_home_in_district(f"{obligation}.patient_id"), [self._district]),
        )

    # --- referrals, quotas, bookings ------------------------------------------------------

    def referral(self, referral: str = "r") -> Fragment:
        """Referrals (alias ``referral`` of ``v_referrals``) with their steps."""
        org = self._org
        return self._choose(
            (
                f"({referral}.center_id = ? OR EXISTS (SELECT 1 FROM v_relations rel "
                f"WHERE rel.source_id = {referral}.id AND rel.org_id = ?) "
                f"OR {_relation(f'{referral}.patient_id', kinds=('home',), active=True)})",
                [org, org, org],
            ),
            (_in_district(f"{referral}.center_id"), [self._district]),
        )

    def quota(self, quota: str = "q") -> Fragment:
        """Quotas (alias ``quota`` of ``v_quotas``): slots, counts, release time."""
        org = self._org
        return self._choose(
            (
                f"({quota}.hospital_id = ? OR {quota}.reserved_center = ? OR "
                f"{quota}.reserved_district = (SELECT so.district FROM v_orgs so "
                "WHERE so.id = ? AND so.kind = 'community_center'))",
                [org, org, org],
            ),
            (
                f"({quota}.reserved_district = ? OR {_in_district(f'{quota}.reserved_center')})",
                [self._district, self._district],
            ),
        )

    def booking(self, booking: str = "b") -> Fragment:
        """Bookings' details (alias ``booking`` of ``v_bookings``): whose, which team, who."""
        return self._choose(
            (f"({booking}.center_id = ? OR {booking}.hospital_id = ?)", [self._org, self._org]),
            (_in_district(f"{booking}.center_id"), [self._district]),
        )

    # --- organisations ----------------------------------------------------------------------

    def organisation(self, org: str = "o.id") -> Fragment:
        """An organisation's own lists: worklists, KPIs (``org``: its id column)."""
        return self._choose((f"{org} = ?", [self._org]), (_in_district(org), [self._district]))

    def team(self, team: str = "t") -> Fragment:
        """Teams (alias ``team`` of ``v_teams``) and their workloads: the center's own."""
        return self.organisation(f"{team}.center_id")
