"""``/ready`` tells the truth about the views (issue 15): with the views frozen (a projection
runner restarting for ever) every read answered 503 ``views-behind`` while ``/ready`` still
said ``ready``. Now it says ``views-stalled`` once the views have lacked an event for longer
than ``JIAYI_VIEWS_MAX_LAG`` without moving, and ``ready`` again once they catch up.

The runner is not started here (the views stop following the log as a stopped or wedged runner
leaves them), then run by hand to catch up.
"""

from __future__ import annotations

import time
from uuid import UUID

import httpx

from api.main import create_app
from domain.common import Actor
from jiayi.bootstrap import build_application, build_projections
from jiayi.settings import Settings
from projections.runner import Runner
from tests.e2e.server import Served

BOUND = 1
ROOT = Actor("setup", UUID(int=0))


def test_ready_says_views_stalled_while_the_views_do_not_follow_the_log(
    settings: Settings,
) -> None:
    app = build_application(settings)
    views = build_projections(settings, app, run=False)
    api_settings = settings.model_copy(update={"views_max_lag": BOUND})
    served = Served(create_app(api_settings, app=app, queries=views.queries)).start()
    try:
        with httpx.Client(base_url=served.url, timeout=30) as http:
            assert http.get("/ready").status_code == 200
            time.sleep(BOUND + 0.5)
            assert http.get("/ready").status_code == 200  # nothing to follow: not stalled
            app.register_organisation(
                "community_center", name="鼓楼社区卫生服务中心", district="鼓楼区", actor=ROOT
            )
            first = http.get("/ready")
            assert first.status_code == 200, first.text  # just recorded: within the bound
            time.sleep(BOUND + 0.5)
            stalled = http.get("/ready")
            assert stalled.status_code == 503, stalled.text
            problem = stalled.json()
            assert problem["code"] == "views-stalled"
            log_position = app.max_position()
            assert problem["log_position"] == log_position
            assert problem["behind"] == log_position - problem["views_position"] > 0
            assert problem["seconds"] > BOUND
            assert f"{problem['behind']} behind the log" in problem["detail"]
            assert int(stalled.headers["retry-after"]) > 0
            store = views.location.open()
            try:
                Runner(store, views.reader).catch_up()
            finally:
                store.close()
            again = http.get("/ready")
            assert again.status_code == 200, again.text
            assert again.json()["views_position"] == log_position
    finally:
        served.stop()
        views.close()
        app.close()
