"""A local proxy that misbehaves on purpose, to test how a WhatsApp client copes with a bad
network path without any network.

It speaks just enough SOCKS5 (no auth or username/password, RFC 1928/1929) and HTTP
`CONNECT` to see where the client wants to go, then does what its `mode` says:

- `refuse`: answer the request with a failure (SOCKS5 reply 5 "connection refused",
  HTTP 502), then close: a proxy that cannot reach the target.
- `stall`: accept the TCP connection and never answer anything: a blackholed path. The
  connection stays open until the client gives up or the proxy stops.
- `drop`: report success (the tunnel is "open"), read `drop_after` bytes of what the
  client sends through it (a TLS ClientHello), then close: a path that dies mid-stream.

No target is ever contacted. Every connection is recorded (`connections`), with what was
asked for and when it opened and closed, so tests can assert that the client came through
the proxy, how often, and that it let go of its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["refuse", "stall", "drop"]
Protocol = Literal["socks5", "http", "unknown"]


@dataclass
class ProxyConnection:
    """One client connection to the proxy, as the proxy saw it."""

    opened: float
    """`time.monotonic()` when the TCP connection was accepted."""
    protocol: Protocol = "unknown"
    target: str = ""
    """`host:port` the client asked the proxy to reach ('' before the request arrived)."""
    username: str = ""
    """SOCKS5 username, if the client authenticated."""
    tunnelled: int = 0
    """Bytes the client sent through the tunnel (`drop` mode)."""
    closed: float | None = None
    """`time.monotonic()` when the connection ended, None while it is open."""


@dataclass
class FaultProxy:
    """The proxy server; `async with FaultProxy("stall") as proxy: proxy.url("socks5")`."""

    mode: Mode
    drop_after: int = 16
    host: str = "127.0.0.1"
    connections: list[ProxyConnection] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, scheme: str, credentials: str = "") -> str:
        """The proxy URL to hand to a client (`credentials`: `user:password`)."""
        auth = f"{credentials}@" if credentials else ""
        return f"{scheme}://{auth}{self.host}:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- what tests read ----------------------------------------------------------
    def open_connections(self) -> list[ProxyConnection]:
        return [c for c in self.connections if c.closed is None]

    def requested(self) -> list[ProxyConnection]:
        """Connections that got as far as asking for a target."""
        return [c for c in self.connections if c.target]

    async def wait(self, predicate: Callable[[FaultProxy], bool], timeout: float,
                   what: str) -> None:
        """Wait until `predicate(self)` holds (re-checked on every connection change)."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"proxy: {what} within {timeout} s; saw "
                                 f"{self.connections}") from None

    # ---- serving --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ProxyConnection(opened=time.monotonic())
        self.connections.append(conn)
        self._changed.set()
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            first = await reader.readexactly(1)
            if first == b"\x05":
                await self._socks5(conn, reader, writer)
            else:
                await self._http(conn, first, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            conn.closed = time.monotonic()
            self._changed.set()

    async def _socks5(self, conn: ProxyConnection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        conn.protocol = "socks5"
        if self.mode == "stall":
            await self._hold(reader)
            return
        (count,) = await reader.readexactly(1)
        methods = await reader.readexactly(count)
        if 2 in methods:  # username/password (RFC 1929)
            writer.write(b"\x05\x02")
            await writer.drain()
            _version, ulen = await reader.readexactly(2)
            conn.username = (await reader.readexactly(ulen)).decode(errors="replace")
            (plen,) = await reader.readexactly(1)
            await reader.readexactly(plen)
            writer.write(b"\x01\x00")
        else:
            writer.write(b"\x05\x00")
        await writer.drain()
        _version, _command, _reserved, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = f"[{ipaddress.IPv6Address(await reader.readexactly(16))}]"
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode(errors="replace")
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        conn.target = f"{host}:{port}"
        self._changed.set()
        bound = b"\x01\x00\x00\x00\x00\x00\x00"
        if self.mode == "refuse":
            writer.write(b"\x05\x05\x00" + bound)
            await writer.drain()
            return
        writer.write(b"\x05\x00\x00" + bound)
        await writer.drain()
        await self._drop(conn, reader)

    async def _http(self, conn: ProxyConnection, first: bytes, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        if self.mode == "stall":
            conn.protocol = "http"
            await self._hold(reader)
            return
        head = first + await reader.readuntil(b"\r\n\r\n")
        request_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
        parts = request_line.split()
        if len(parts) == 3 and parts[0] == "CONNECT":
            conn.protocol = "http"
            conn.target = parts[1]
        self._changed.set()
        if self.mode == "refuse" or not conn.target:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await self._drop(conn, reader)

    async def _drop(self, conn: ProxyConnection, reader: asyncio.StreamReader) -> None:
        while conn.tunnelled < self.drop_after:
            chunk = await reader.read(self.drop_after - conn.tunnelled)
            if not chunk:
                return
            conn.tunnelled += len(chunk)

    @staticmethod
    async def _hold(reader: asyncio.StreamReader) -> None:
        """Say nothing; read (and ignore) until the client closes."""
        while await reader.read(4096):
            pass


@contextlib.asynccontextmanager
async def fault_proxy(mode: Mode, drop_after: int = 16) -> AsyncIterator[FaultProxy]:
    """`async with fault_proxy("refuse") as proxy:` a started proxy, stopped after."""
    async with FaultProxy(mode, drop_after=drop_after) as proxy:
        yield proxy
