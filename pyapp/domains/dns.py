"""What the DNS says about a custom domain, asked of the configured resolver with dnspython.

Configuration (environment, or `Settings.extra["domains"]` in tests):
- PARLEY_DNS_RESOLVER=host:port: the resolver to ask (default: the system's);
- PARLEY_CUSTOM_DOMAIN_TARGET: the name customers point a CNAME at (default: the host of
  PARLEY_PUBLIC_URL);
- PARLEY_CUSTOM_DOMAIN_ADDRESSES: comma-separated addresses for an A/AAAA record where a CNAME
  cannot be used (a zone apex); default: the target's own addresses, resolved the same way.

Only records are read: nothing connects to the customer's host, so no SSRF question arises.
The verdict (token and routing) is parley.record_domain_check's.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.resolver

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class DomainConfig:
    resolver: tuple[str, int] | None = None
    target: str = ""
    addresses: tuple[str, ...] = field(default_factory=tuple)
    timeout: float = TIMEOUT_S


def _resolver_address(spec: str) -> tuple[str, int] | None:
    spec = spec.strip()
    if not spec:
        return None
    host, _, port = spec.rpartition(":") if spec.count(":") == 1 or spec.startswith("[") else (spec, "", "53")
    return host.strip("[]"), int(port or 53)


def domain_config(settings) -> DomainConfig:
    override = settings.extra.get("domains")
    if isinstance(override, DomainConfig):
        return override
    target = os.environ.get("PARLEY_CUSTOM_DOMAIN_TARGET", "") or (urlsplit(settings.public_url or "").hostname or "")
    addresses = tuple(a.strip() for a in os.environ.get("PARLEY_CUSTOM_DOMAIN_ADDRESSES", "").split(",") if a.strip())
    return DomainConfig(_resolver_address(os.environ.get("PARLEY_DNS_RESOLVER", "")), target.lower(), addresses)


class DomainDns:
    def __init__(self, config: DomainConfig):
        self.config = config

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self.config.resolver is None:
            resolver = dns.asyncresolver.Resolver()
        else:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [self.config.resolver[0]]
            resolver.port = self.config.resolver[1]
        resolver.lifetime = self.config.timeout
        return resolver

    async def _answer(self, resolver, name: str, kind: str) -> list[str]:
        try:
            answer = await resolver.resolve(name, kind, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        if kind == "TXT":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        if kind == "CNAME":
            return [r.target.to_text().rstrip(".").lower() for r in answer]
        return [r.to_text() for r in answer]

    async def expected(self) -> dict:
        """Where a custom domain must point: the target name and its addresses."""
        addresses = list(self.config.addresses)
        if not addresses and self.config.target:
            resolver = self._resolver()
            for kind in ("A", "AAAA"):
                with contextlib.suppress(dns.exception.DNSException):
                    addresses += await self._answer(resolver, self.config.target, kind)
        return {"target": self.config.target, "addresses": addresses}

    async def observe(self, hostname: str, txt_name: str) -> dict:
        """The records that matter: TXT strings at txt_name, the host's CNAME, else its addresses."""
        resolver = self._resolver()
        out: dict = {"txt": [], "cname": None, "addresses": []}
        try:
            out["txt"] = await self._answer(resolver, txt_name, "TXT")
            cname = await self._answer(resolver, hostname, "CNAME")
            if cname:
                out["cname"] = cname[0]
            else:
                for kind in ("A", "AAAA"):
                    out["addresses"] += await self._answer(resolver, hostname, kind)
        except dns.exception.Timeout:
            out["error"] = "The DNS resolver did not answer in time."
        except dns.exception.DNSException as exc:
            out["error"] = f"DNS: {type(exc).__name__}"
        return out
