"""A raw HTTP/1.1 client that can walk away from a stream mid-way, as a real client does."""

from __future__ import annotations

import json
import socket
from typing import Any


def open_stream(port: int, path: str, token: str, body: dict[str, Any]) -> tuple[socket.socket, bytes]:
    """Send a streaming request; return the socket and the bytes read up to the first SSE event."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        + payload
    )
    received = b""
    while b"data: " not in received:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    return sock, received


def abort(sock: socket.socket) -> None:
    """Close with a reset, like a killed client."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
