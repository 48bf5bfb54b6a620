"""``jiayi serve``: the HTTP API under uvicorn. With an empty store it builds the demo city
first (by default on the embedded default only; on PostgreSQL when ``--demo-patients N`` asks)
and prints how to get a token and where the docs are."""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from domain.application import CareCoordination
from jiayi.bootstrap import Projections, build_application, build_projections, schema_lock
from jiayi.settings import Settings
from runtime.logs import announce

if TYPE_CHECKING:
    from jiayi.demo import DemoSummary

#: Residents of the demo city built on an empty embedded store when no size is given.
DEMO_PATIENTS = 2000


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="run the HTTP API")
    p.add_argument("--host", default=None, help="default: JIAYI_HTTP_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: JIAYI_HTTP_PORT or 8000")
    p.add_argument(
        "--demo-patients",
        type=int,
        default=None,
        help="build a demo city of this size when the store is empty (default: "
        f"{DEMO_PATIENTS} on the embedded default; none on PostgreSQL unless given; 0: never)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run)


def build_read_side(settings: Settings, app: CareCoordination) -> Projections:
    """The views and their queries; the runner follows the log in-process unless the
    settings say a separate ``jiayi projections run`` does it."""
    return build_projections(settings, app, run=settings.projections_in_process)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import create_app
    from audit.seals import start_schedule
    from jiayi.metrics import serve as serve_metrics

    settings: Settings = args.settings
    host = args.host or settings.http_host
    port = args.port or settings.http_port
    app = build_application(settings)
    demo_if_empty(settings, app, args.demo_patients, args.seed)
    views = build_read_side(settings, app)
    seals = start_schedule(settings)
    metrics = serve_metrics(settings)
    _print_help(host, port)
    _print_organisations(app)
    closed = threading.Event()

    def close() -> None:
        """Once, at a clean stop: the last seal, the views' runner, the event store."""
        if closed.is_set():
            return
        closed.set()
        if seals is not None:
            seals.stop()
        if metrics is not None:
            metrics.stop()
        views.close()
        app.close()

    try:
        uvicorn.run(
            create_app(settings, app=app, queries=views.queries, on_stop=close),
            host=host,
            port=port,
            # logging as runtime.logs set it up; one line per request from api.requestid
            log_config=None,
            access_log=False,
        )
    finally:
        close()
    return 0


@contextmanager
def demo_lock(settings: Settings) -> Iterator[None]:
    """One process at a time looks at the store and builds the demo city (PostgreSQL: an
    advisory lock of the schema, so processes started together build it once; the embedded
    store serves one process)."""
    with schema_lock(settings, "jiayi-demo"):
        yield


def demo_if_empty(
    settings: Settings, app: CareCoordination, patients: int | None, seed: int
) -> DemoSummary | None:
    """Build a demo city of ``patients`` residents when the store holds no event yet.

    ``None`` (not given) means :data:`DEMO_PATIENTS` on the embedded default and none on
    PostgreSQL, which is a real deployment's store: there it is built only when asked, and an
    empty store not asked for one says so."""
    if patients is None and settings.uses_postgres:
        if app.max_position() == 0:
            announce("empty store on PostgreSQL: no demo city (ask for one: --demo-patients N)")
        return None
    size = DEMO_PATIENTS if patients is None else patients
    if size <= 0:
        return None
    with demo_lock(settings):
        if app.max_position() != 0:
            return None
        from jiayi.demo import generate

        announce(f"empty store: building a demo city of {size} residents ...")
        summary = generate(app, size, seed)
    announce("\n".join("  " + line for line in summary.lines()))
    return summary


def _program() -> str:
    """How this command was invoked (``.venv/bin/jiayi`` under ``make run``), for the hints."""
    found = Path(sys.argv[0])
    if found.name != "jiayi":
        return "jiayi"
    try:
        return str(found.resolve().relative_to(Path.cwd()))
    except ValueError:
        return "jiayi"


def _print_help(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    jiayi = _program()
    announce(
        "\n".join(
            [
                f"jiayi API on {base}",
                f"  web pages:       {base}/ui   (sign in with a token, below)",
                f"  docs (OpenAPI):  {base}/docs   ({base}/openapi.json)",
                f"  health / ready:  {base}/health  {base}/ready",
                "  get a token (in another shell, same environment):",
                f"    {jiayi} tokens issue --role auditor --staff me",
                f"    {jiayi} tokens issue --role center_staff --staff gp-1 --org <center id>",
                "  then: curl -H 'Authorization: Bearer <token>' -H 'Content-Type: "
                'application/json\' -d \'{"q": "王秀"}\' ' + base + "/patients/search",
            ]
        )
    )


def _print_organisations(app: CareCoordination, limit: int = 6) -> None:
    """A few organisation ids to issue center or hospital staff tokens for."""
    topic = "domain.organisations:Organisation.Registered"
    found = app.recorder.select_notifications(start=1, limit=limit, topics=[topic])
    lines = ["  organisations (for --org):"] if found else []
    for notification in found:
        event = app.mapper.to_domain_event(notification)
        kind = getattr(event, "kind", "?")
        lines.append(f"    {event.originator_id}  {kind:<16} {getattr(event, 'name', '')}")
    if lines:
        announce("\n".join(lines))
