"""Shared fixtures: see tests/knowledge/fixtures.py."""
from tests.knowledge.fixtures import *  # noqa: F401,F403

