"""A small typed Python client for Parley's HTTP API: one method per route (made from the route table
that scripts/gen_client.py writes from the server's OpenAPI document), errors raised as ParleyError with the API's
`code` and status.

    async with ParleyClient("http://127.0.0.1:8080") as parley:
        auth = await parley.sign_in(body={"email": ..., "password": ...})
        agent = parley.with_token(auth["access_token"])
        page = await agent.list_conversations(status="waiting_human")

The tests and the bench scripts use it, so it cannot drift from the server.
"""

from pyapp.client.base import ParleyError
from pyapp.client.operations import OPERATIONS, Operations


class ParleyClient(Operations):
    """The client: ClientBase's session and errors, Operations' methods."""


__all__ = ["OPERATIONS", "ParleyClient", "ParleyError"]
