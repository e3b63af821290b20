"""A TCP proxy on 127.0.0.1 in front of PostgreSQL that can hold a connection open after the server
closed its side: the client has read the server's last bytes (a FATAL ErrorResponse, say) but not
the close, as across a network path that delivers the FIN late (a NAT, a load balancer, a pooler).
That is the window in which a client library sees a connection that is neither usable nor closed."""
from __future__ import annotations

import asyncio
import contextlib


class HoldingProxy:
    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.let_go = asyncio.Event()  # set: server-side closes reach the client again
        self.let_go.set()
        self.held = 0  # connections whose server side closed while held
        self.changed = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> HoldingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        self.let_go.set()
        if self.server is not None:
            self.server.close()
        for writer in list(self._writers):
            writer.close()

    def hold(self) -> None:
        """From now on, keep the client's side open after the server closes, until `release`."""
        self.let_go.clear()

    def release(self) -> None:
        self.let_go.set()

    async def wait_held(self, n: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: self.held >= n)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        to_server = asyncio.create_task(self._pump(reader, up_writer))
        try:
            await self._pump(up_reader, writer)  # the server's bytes, until it closes
            if not self.let_go.is_set():
                async with self.changed:
                    self.held += 1
                    self.changed.notify_all()
                await self.let_go.wait()
        finally:
            to_server.cancel()
            for w in (writer, up_writer):
                w.close()
            self._writers.discard(writer)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
