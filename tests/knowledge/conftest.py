"""Shared fixtures: see tests/knowledge/fixtures.py."""
from tests.knowledge.fixtures import *  # noqa: F401,F403


def pytest_collection_modifyitems(session, config, items):
    """Tests that load the local embedding model run last, so tests elsewhere that time the
    model's first load in a cold process (tests/providers) are not affected by the order."""
    heavy = [item for item in items if "local_embedder" in getattr(item, "fixturenames", ())]
    if heavy:
        items[:] = [item for item in items if item not in heavy] + heavy
