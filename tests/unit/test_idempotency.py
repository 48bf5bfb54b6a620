"""Idempotency keys: which POSTs are stored (commands) and which pass through (reads), and a
request hash that cannot be matched against guesses without the caller's token."""

from __future__ import annotations

from fastapi.routing import APIRoute

from api.idempotency import READ_ONLY, request_digest
from api.routes import MODULES
from api.schemas import CommandResult

#: Commands whose answer is not a CommandResult, and why it holds nothing personal.
OTHER_COMMANDS = {"/audit/verification": "starts a verification: answers with its range"}


def test_every_post_route_is_a_command_or_declared_read_only() -> None:
    """An answer kept for replay must hold no personal data: a command's result (ids and a
    position), or one of OTHER_COMMANDS; any other POST only reads and is in READ_ONLY."""
    reads, commands = set(), set()
    for module in MODULES:
        for route in module.router.routes:
            if not isinstance(route, APIRoute) or "POST" not in route.methods:
                continue
            model = route.response_model
            is_command = (
                isinstance(model, type) and issubclass(model, CommandResult)
            ) or route.path in OTHER_COMMANDS
            (commands if is_command else reads).add(route.path)
    assert reads == READ_ONLY, "a POST route neither a command nor declared read-only"
    assert not READ_ONLY & commands


def test_the_request_hash_is_keyed_with_the_callers_token() -> None:
    body = b'{"q": "320106194711237315"}'
    mine = request_digest("jy_a_secret", "POST", "/patients", "", body)
    assert mine == request_digest("jy_a_secret", "POST", "/patients", "", body)
    assert mine != request_digest("jy_b_secret", "POST", "/patients", "", body)
    assert mine != request_digest("jy_a_secret", "POST", "/patients", "", body + b" ")
