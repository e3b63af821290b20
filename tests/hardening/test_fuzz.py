"""Schema-driven fuzzing of every route in /api/openapi.json (schemathesis), as a signed-in owner with a
workspace that has a chatbot and a conversation: bounded examples per operation, valid and invalid ones.
No response may be >= 500, and every 4xx must be the error shape {"error": {"code", "message"}}."""
from __future__ import annotations

import contextlib
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from pyapp.api import api
from pyapp.app import load_surfaces
from schemathesis import GenerationMode
from support.accounts import sign_up
from support.server import free_port

EXAMPLES = 3  # per operation and generation mode: ~830 requests in all (about 10 s)
LAST = {("DELETE", "/api/tenant"), ("POST", "/api/auth/logout")}  # they end the workspace or the session


# Deliberate answers >= 500 that are a state of the installation, not a fault.
DELIBERATE = {(503, "payments_disabled"),    # billing without Stripe configured
              (502, "telegram_unavailable")}  # the Bot API unreachable (here: a closed local port)


def _problem(response) -> str | None:
    status = response.status_code
    if status >= 500:
        with contextlib.suppress(Exception):  # not the error shape: reported below
            if (status, response.json()["error"]["code"]) in DELIBERATE:
                return None
        return f"{status}: {response.text[:200]}"
    if status >= 400:
        try:
            err = response.json()["error"]
            assert isinstance(err["code"], str) and isinstance(err["message"], str)
        except Exception:  # any deviation from the shape is the finding
            return f"{status} not in the error shape: {response.text[:200]}"
    return None


@pytest.mark.timeout(400)
def test_fuzz_every_route(server_thread, monkeypatch):
    # Connecting a Telegram bot asks the Bot API first: never the Internet from a test.
    monkeypatch.setenv("PARLEY_TELEGRAM_API", f"http://127.0.0.1:{free_port()}")
    load_surfaces()
    schema = schemathesis.openapi.from_dict(api.openapi())
    owner = server_thread.run(sign_up(server_thread.server))
    headers = {"Authorization": f"Bearer {owner['access_token']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.method.upper(), op.path) in LAST)
    problems: list[str] = []
    calls = 0
    started = time.monotonic()

    for op in operations:
        # An event stream that opened never ends by itself: schemathesis reads it for the request's
        # read timeout, so a short one there (the status and first bytes are what is checked).
        streams = "text/event-stream" in op.definition.raw["responses"].get("200", {}).get("content", {})
        timeout = (30, 0.5) if streams else 30
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @hsettings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                       phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(mode))
            def run(case):
                nonlocal calls
                response = case.call(base_url=server_thread.base_url, headers=headers, timeout=timeout)  # noqa: B023  run() is called within this iteration
                calls += 1
                problem = _problem(response)
                if problem:
                    problems.append(f"{op.method.upper()} {op.path} [{mode.value}] {case.path_parameters} "  # noqa: B023  run() is called within this iteration
                                    f"{case.query} {str(case.body)[:120]!r}: {problem}")

            try:
                run()
            except Unsatisfiable:
                # Nothing to make invalid: a public operation without parameters or body.
                if mode is not GenerationMode.NEGATIVE:
                    raise
    print(f"fuzz: {calls} requests over {len(operations)} operations in {time.monotonic() - started:.0f} s")
    assert calls > 250
    assert not problems, "\n".join(problems[:30])
