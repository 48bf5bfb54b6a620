"""What the routes use, built from :class:`Settings` when the app is created (never at import)."""

from __future__ import annotations

import threading

from api.database import SideStore
from api.idempotency import IdempotencyStore
from api.readiness import ViewsWatch
from api.sessions import SessionStore
from api.tokens import TokenStore
from audit.service import Verifications
from domain.application import CareCoordination
from jiayi.bootstrap import build_application
from jiayi.settings import Settings
from projections.queries import Queries


class Services:
    """The application (built lazily, so the API starts while the database is down), the read
    side (``Queries``, when the projections are wired in) and the API's own tables."""

    def __init__(
        self,
        settings: Settings,
        application: CareCoordination | None = None,
        queries: Queries | None = None,
    ) -> None:
        self.settings = settings
        self.queries = queries
        self.store = SideStore(settings)
        self.tokens = TokenStore(self.store)
        self.idempotency = IdempotencyStore(self.store)
        self.sessions = SessionStore(
            self.store, settings.ui_session_idle, settings.ui_session_lifetime
        )
        self.verifications = Verifications(settings)
        self.views_watch = ViewsWatch(settings.views_max_lag)
        self._application = application
        self._owns_application = application is None
        self._lock = threading.Lock()

    def application(self) -> CareCoordination:
        if self._application is None:
            with self._lock:
                if self._application is None:
                    self._application = build_application(self.settings)
        return self._application

    def close(self) -> None:
        if self._owns_application and self._application is not None:
            self._application.close()
            self._application = None
        self.store.close()
