"""The node's listening sockets, made one way: TCP (listening now, or bound for later) and UDP (QUIC)."""

from __future__ import annotations

import socket

__all__ = ["tcp_socket", "udp_socket"]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_socket(host: str, port: int, *, reuse_port: bool, backlog: int | None) -> socket.socket:
    """A non-blocking TCP socket bound to `host:port`, listening with `backlog` (None: bound only; asyncio's
    `start_server` listens, or it just holds the port). Raises OSError.

    IPPROTO_TCP and TCP_NODELAY: accepted connections get no Nagle delay (else ~40 ms delayed-ACK stalls)."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A non-blocking UDP socket bound to `host:port`. Raises OSError."""
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
