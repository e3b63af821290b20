"""A DNS server on 127.0.0.1 (UDP) speaking the real protocol: queries are parsed and answers
built with dnspython from a small in-memory zone the test edits (`records[(name, type)] = [...]`).

Names are absolute-less and lower-case (`"_parley.chat.shop.com"`); a name with no record of the
asked type but with others answers NOERROR/empty (NoAnswer); an unknown name answers NXDOMAIN.
`silent = True` makes it drop queries (the resolver then times out). Every query is recorded.
"""
from __future__ import annotations

import asyncio

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class FakeDns(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.queries: list[tuple[str, str]] = []
        self.silent = False
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeDns:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    async def __aexit__(self, *exc) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # not DNS: a real server ignores it too
            return
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        if self.silent:
            return
        response = dns.message.make_response(query)
        values = self.records.get((name, kind))
        if values:
            ttl = 60
            rrset = dns.rrset.from_text_list(question.name, ttl, dns.rdataclass.IN, question.rdtype,
                                             [f'"{v}"' if kind == "TXT" else v for v in values],
                                             origin=dns.name.root, relativize=False)
            response.answer.append(rrset)
        elif not any(n == name for n, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)
