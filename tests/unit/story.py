"""The cast of the unit stories: two centers, two hospitals, their staff, a calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from eventsourcing.domain import Aggregate

from domain.common import Actor, stable_id

CENTER = stable_id("unit", "鼓楼社区卫生服务中心")
OTHER_CENTER = stable_id("unit", "江宁社区卫生服务中心")
HOSPITAL = stable_id("unit", "鼓楼医院")
OTHER_HOSPITAL = stable_id("unit", "江宁医院")
TEAM = stable_id("unit", "团队一")
OTHER_TEAM = stable_id("unit", "团队二")
PATIENT = stable_id("unit", "王秀英")

CENTER_ADMIN = Actor("center-admin", CENTER)
GP = Actor("gp-1", CENTER)
OTHER_CENTER_GP = Actor("gp-9", OTHER_CENTER)
HOSPITAL_DESK = Actor("cardio-desk", HOSPITAL)
OTHER_HOSPITAL_DESK = Actor("intruder", OTHER_HOSPITAL)

TODAY = date(2026, 6, 1)


def at(day: date = TODAY, hour: int = 9) -> datetime:
    """An aware moment on ``day``."""
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def days(n: int, since: date = TODAY) -> date:
    return since + timedelta(days=n)


def recorded(aggregate: Aggregate) -> list[str]:
    """Names of the events the aggregate has recorded since last asked (drains them)."""
    return [type(e).__name__ for e in aggregate.collect_events()]
