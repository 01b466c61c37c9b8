"""This process's own TCP sockets, read from /proc: to cut a connection Go is stuck on.

whatsmeow dials WhatsApp (or the session's proxy) holding its socket lock, and a SOCKS5
handshake or a websocket upgrade that never gets an answer has no deadline there; neonize
gives Python no way to cancel it (its dial context is `context.Background()`), and
`Disconnect`/`Stop` wait for that same lock. `shutdown(2)` on the dialling socket makes
Go's blocked read return EOF: the dial fails and `Neonize()` returns.

Only ever `shutdown`, never `close`: the descriptor stays Go's and Go closes it itself;
closing it here could close whatever later reuses the number. Linux only (/proc); where
/proc is missing nothing is found and nothing is cut.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROC_SELF: Final = Path("/proc/self")


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One TCP socket of this process."""

    inode: int
    fd: int
    peer_ip: str
    """The remote address (an IPv4-mapped IPv6 address is given as IPv4)."""
    peer_port: int


def socket_inodes() -> frozenset[int]:
    """The inodes of every socket this process holds now."""
    return frozenset(_fd_inodes().values())


def tcp_sockets() -> list[TcpSocket]:
    """Every TCP socket this process holds, with its peer."""
    peers = _tcp_peers()
    return [TcpSocket(inode, fd, *peers[inode])
            for fd, inode in _fd_inodes().items() if inode in peers]


def shutdown(sock: TcpSocket) -> bool:
    """`shutdown(SHUT_RDWR)` the socket if its descriptor still holds that very socket
    (checked on a duplicate, so a reused descriptor number is never touched)."""
    try:
        dup = os.dup(sock.fd)
    except OSError:
        return False
    try:
        if os.fstat(dup).st_ino != sock.inode:
            return False
        handle = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return False
    try:
        handle.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:  # not connected (any more)
        return False
    finally:
        handle.close()  # the duplicate only; the socket itself stays Go's


def _fd_inodes() -> dict[int, int]:
    found: dict[int, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(PROC_SELF / "fd"):
            with contextlib.suppress(OSError, ValueError):
                link = os.readlink(entry.path)
                if link.startswith("socket:["):
                    found[int(entry.name)] = int(link[8:-1])
    return found


def _tcp_peers() -> dict[int, tuple[str, int]]:
    """inode -> (peer address, peer port) from /proc/self/net/tcp and tcp6."""
    peers: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC_SELF / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            with contextlib.suppress(ValueError):
                address, port = fields[2].split(":")
                peers[int(fields[9])] = (_address(address), int(port, 16))
    return peers


def _address(hex_address: str) -> str:
    """A /proc/net address: 32-bit words, each in host byte order."""
    raw = bytes.fromhex(hex_address)
    words = raw if sys.byteorder == "big" else b"".join(
        raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return str(ipaddress.IPv4Address(words))
    v6 = ipaddress.IPv6Address(words)
    return str(v6.ipv4_mapped or v6)
