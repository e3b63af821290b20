"""The words of an alert or notice, from a delivery's payload (plain text: e-mail body, Slack text)."""

from __future__ import annotations

from typing import Any

TITLES = {
    "conversation.human_requested": "A visitor asked for a person",
    "conversation.lead_captured": "New lead",
    "conversation.negative_feedback": "A visitor was unhappy",
    "alert.test": "Test alert",
    "notice.webhook_paused": "A webhook endpoint was paused",
}


def alert_text(payload: dict[str, Any], console_url: str = "") -> tuple[str, str]:
    """(subject, body) for a delivery payload."""
    kind = str(payload.get("type", ""))
    data = payload.get("data") or {}
    title = TITLES.get(kind, kind or "Parley")
    bot = data.get("chatbot_name")
    subject = f"[Parley] {title}" + (f" — {bot}" if bot else "")
    lines = [title + (f" ({bot})." if bot else ".")]
    message = data.get("message") or {}
    if message.get("body"):
        lines.append(f"Last message: {_cut(message['body'], 500)}")
    details = data.get("details") or {}
    for key in ("name", "email", "phone"):
        if details.get(key):
            lines.append(f"{key.capitalize()}: {_cut(str(details[key]), 200)}")
    if data.get("rating") is not None:
        lines.append(f"Rating: {data['rating']}/5")
    if data.get("comment"):
        lines.append(f"Comment: {_cut(data['comment'], 500)}")
    if kind == "notice.webhook_paused":
        lines.append(f"Endpoint: {data.get('name')} ({data.get('url')})")
        lines.append(f"Reason: {data.get('reason')}")
        lines.append("Fix the endpoint, then resume it from the console's Deliveries page; nothing was lost.")
    if kind == "alert.test":
        lines.append("This alert channel works.")
    if data.get("conversation_id") and console_url:
        lines.append(f"Open: {console_url.rstrip('/')}/console/conversations/{data['conversation_id']}")
    return subject, "\n".join(lines)


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
