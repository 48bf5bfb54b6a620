"""Web pages for coordinators, staff and auditors, served by the API under ``/ui``.

Server-rendered (Jinja2 templates, SVG charts, a little vanilla JS); every asset ships with the
package (``templates/``, ``static/``), nothing is loaded from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.web import verification
from api.web.pages import (
    PROBLEM_PAGES,
    PageError,
    SignInRequired,
    on_page_error,
    on_sign_in_required,
    router,
)

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the pages and their assets on ``app``."""
    app.include_router(router)
    app.include_router(verification.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(PageError, on_page_error)
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    # domain errors and an unreachable database: the API's status and code, as a page
    app.state.problem_pages = PROBLEM_PAGES
