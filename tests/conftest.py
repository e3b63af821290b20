"""Test harness. Fixtures, factories and fakes live in the `support` package (tests/support/,
importable as `support` since tests/ is on pythonpath); the modules below are plugins, so their
fixtures reach every test. Directory conftest.py files only pick the directory's own fixtures
from `support` (e.g. which `tenant`)."""

import pytest

pytest.register_assert_rewrite("support")

pytest_plugins = [
    "support.database",
    "support.server",
    "support.accounts",
    "support.mail",
    "support.rows",
    "support.browser",
    "support.embedder",
    "support.fakes.fixtures",
]

# The heaviest files first: scripts/test.sh runs two workers a file at a time (--dist loadfile),
# handing out files in collection order, so a heavy file collected last would run alone at the
# end. Seconds per file are printed by `pytest --durations`; this list only orders, it skips and
# changes nothing (a file missing from the tree is ignored).
HEAVY_FIRST = (
    "hardening/test_fuzz.py",
    "providers/test_embeddings.py",
    "knowledge/test_answer_quality.py",
    "outbox/test_outbox_resilience.py",
    "hardening/test_pooled_isolation.py",
    "widget/test_resilience.py",
    "console/test_browser.py",
    "ops/test_gdpr.py",
    "assistant/test_assistant.py",
    "ops/test_metrics.py",
    "webhooks/test_webhooks.py",
    "knowledge/test_search_plan.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    def heavy(item):
        path = item.path.as_posix()
        return next((i for name, i in rank.items() if path.endswith("/tests/" + name)), len(rank))

    items.sort(key=heavy)  # stable: the rest keep their order
