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
