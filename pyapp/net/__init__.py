"""Outbound network access that tenants can influence (knowledge import URLs) goes through here."""
from pyapp.net.safe_fetch import (
    FetchError,
    FetchFailed,
    FetchRefused,
    FetchResult,
    SafeFetcher,
    VettedURL,
    forbidden_reason,
    parse_host,
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
    "forbidden_reason",
    "parse_host",
    "safe_fetch",
    "vet_url",
]
