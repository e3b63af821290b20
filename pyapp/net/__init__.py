"""Outbound network access that tenants can influence (knowledge import URLs) goes through here."""

from pyapp.net.safe_fetch import (
    FetchError,
    FetchFailed,
    FetchRefused,
    FetchResult,
    SafeFetcher,
    VettedURL,
    check_url_form,
    forbidden_reason,
    guarded_session,
    parse_host,
    request_spans,
    safe_fetch,
    vet_url,
)

__all__ = [
    "FetchError",
    "FetchFailed",
    "FetchRefused",
    "FetchResult",
    "SafeFetcher",
    "VettedURL",
    "check_url_form",
    "forbidden_reason",
    "guarded_session",
    "parse_host",
    "request_spans",
    "safe_fetch",
    "vet_url",
]
