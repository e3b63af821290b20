"""Small platform features of the SaaS issue: the tenant id in widget session responses."""
from __future__ import annotations


async def test_widget_session_names_tenant_and_chatbot(tenant):
    status, bot = await tenant.call("POST", "/api/chatbots", json={"name": "B", "allowed_origins": ["https://shop.test"]})
    assert status == 201
    status, body = await tenant.server.call("POST", "/api/widget/sessions", json={"chatbot_key": bot["public_key"], "start": True},
                                            headers={"Origin": "https://shop.test"})
    assert status == 201, body
    assert body["tenant_id"] == str(tenant.id) and body["chatbot_id"] == bot["id"]
    status, again = await tenant.server.call("POST", "/api/widget/sessions/refresh", json={"token": body["token"]},
                                             headers={"Origin": "https://shop.test"})
    assert status == 201 and again["tenant_id"] == str(tenant.id)
