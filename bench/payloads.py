"""What every server in the benchmark says, taken from the responder itself so that the
references send exactly the same bytes: the lecture's 97 bytes, and miniweb's page."""

from __future__ import annotations

from responder.apps import DEFAULT_PAGE, HELLO_LINES

HELLO = b"".join(HELLO_LINES)           # 97 bytes: 11 + 20 + 66
PAGE = DEFAULT_PAGE
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: 192.168.56.100\r\nUser-Agent: tcplab-bench\r\n\r\n"


def http_response(page: bytes = PAGE, server: str = "tcplab-bench-asyncio") -> bytes:
    """A complete HTTP/1.0 response for ``page``, the shape miniweb sends."""
    head = (f"HTTP/1.0 200 OK\r\nServer: {server}\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n").encode()
    return head + page
