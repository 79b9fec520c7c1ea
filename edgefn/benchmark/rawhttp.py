"""A minimal HTTP/1.1 client on a raw socket: single requests timed without a client library's overhead."""

from __future__ import annotations

import socket

__all__ = ["Connection"]


class Connection:
    """One keep-alive connection; `get` sends a GET and reads a Content-Length (or chunked) response. A response
    saying `connection: close` (Hypercorn's after 1,000 requests on one connection) makes the next `get` reconnect."""

    def __init__(self, host: str, port: int, timeout: float = 30.0, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.host = f"{host}:{port}"
        self._address, self._timeout = (host, port), timeout
        self._connect()
        if not any(k.lower() == "host" for k, _ in headers):
            headers = (("Host", self.host), *headers)
        self._extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        self._buf = b""

    def _connect(self) -> None:
        self.sock = socket.create_connection(self._address, timeout=self._timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._closing = False

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        if self._closing:
            self.sock.close()
            self._buf = b""
            self._connect()
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nUser-Agent: edgefn-bench\r\n{self._extra}\r\n".encode("latin-1"))
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        self._closing = headers.get("connection", "").lower() == "close"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                body += self._take(size)
                self._take(2)
                if size == 0:  # no trailers: the last chunk's CRLF was the message's end
                    return status, headers, body
        return status, headers, self._take(int(headers.get("content-length", "0")))

    def _until(self, mark: bytes) -> bytes:
        while mark not in self._buf:
            self._recv()
        line, self._buf = self._buf.split(mark, 1)
        return line

    def _take(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._recv()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def _recv(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buf += chunk

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
