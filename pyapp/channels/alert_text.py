"""The words of an alert or notice, from a delivery's payload (plain text: e-mail body, Slack text)."""

from __future__ import annotations

from typing import Any

TITLES = {
    "conversation.human_requested": "A visitor asked for a person",
    "conversation.lead_captured": "New lead",
    "conversation.negative_feedback": "A visitor was unhappy",
    "alert.test": "Test alert",
    "notice.webhook_paused": "A webhook endpoint was paused",
    "notice.usage_warning": "Usage of your plan",
    "notice.domain_failing": "Your custom domain's DNS records no longer check out",
    "notice.domain_disabled": "Your custom domain was disabled",
}
METERS = {
    "conversations": "conversations this period",
    "ai_messages": "AI replies this period",
    "ai_messages_today": "AI replies today",
    "seats": "seats",
    "chatbots": "chatbots",
    "open_conversations": "open conversations",
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
    if kind == "notice.usage_warning":
        lines += _usage_lines(data, console_url)
    if kind in ("notice.domain_failing", "notice.domain_disabled"):
        lines += _domain_lines(kind, data, console_url)
    if kind == "alert.test":
        lines.append("This alert channel works.")
    if data.get("conversation_id") and console_url:
        lines.append(f"Open: {console_url.rstrip('/')}/console/conversations/{data['conversation_id']}")
    return subject, "\n".join(lines)


def _usage_lines(data: dict[str, Any], console_url: str) -> list[str]:
    lines = [f"Plan: {data.get('plan')}; period {data.get('period_start')} to {data.get('period_end')} (exclusive)."]
    for w in data.get("warnings") or []:
        what = METERS.get(str(w.get("metric")), str(w.get("metric")))
        if int(w.get("threshold") or 0) >= 100:
            lines.append(f"All of your {what} are used: {w.get('used')} of {w.get('allowance')}.")
        else:
            lines.append(f"{w.get('threshold')} % of your {what} are used: {w.get('used')} of {w.get('allowance')}.")
    if console_url:
        lines.append(f"Plans and usage: {console_url.rstrip('/')}/console/billing")
    return lines


def _domain_lines(kind: str, data: dict[str, Any], console_url: str) -> list[str]:
    host = data.get("hostname")
    missing = [
        what
        for what, ok in (
            (f"the TXT record at {data.get('txt_name')}", data.get("txt")),
            ("the CNAME (or A record) to this installation", data.get("routed")),
        )
        if not ok
    ]
    lines = [
        f"Domain: {host}",
        f"Not found in DNS: {', '.join(missing) or 'nothing'} (since {data.get('failing_since')}).",
    ]
    if kind == "notice.domain_failing":
        lines.append(
            f"The widget is still served on {host}; unless the records are back, it stops after {data.get('disabled_after')}."
        )
    else:
        lines.append(
            f"The widget is no longer served on {host}. Restore the records, then ask the operator to enable it."
        )
    if console_url:
        lines.append(f"Records to create: {console_url.rstrip('/')}/console/domains")
    return lines


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
