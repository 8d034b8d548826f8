"""The kernel references: the Linux TCP stack with minimal Python servers on top, run in the
lab VM's namespace beside the responder (on other ports, so the lab's RST block on port 80 does
not touch them).  Standard library only::

    python -m bench.servers hello --listen 192.168.56.100:8080

* ``hello``: asyncio; on accept, write the lecture's 97 bytes and close.
* ``http-asyncio``: asyncio; read the request head, write a precomputed HTTP/1.0 response of
  miniweb's page, close (the kernel doing what miniweb does).
* ``http``: ``http.server.ThreadingHTTPServer`` + ``SimpleHTTPRequestHandler`` serving
  miniweb's page as ``index.html`` from a temporary directory: ``python3 -m http.server``.
* ``hold``: asyncio; accept and keep every connection until the peer goes (the tarpit's
  reference: what holding costs a kernel-socket server).

Like the responder: ``listening on ADDR:PORT`` on stderr when ready, one JSON line of counters
on exit, SIGTERM exits 0, and it stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import signal
import sys
import tempfile
import threading

from .loadgen import raise_nofile

BACKLOG = 4096


class Counters:
    def __init__(self):
        self.accepted = 0
        self.open = 0
        self.peak_open = 0

    def opened(self):
        self.accepted += 1
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)

    def as_dict(self):
        return {"accepted": self.accepted, "open": self.open, "peak_open": self.peak_open}


def _proto_factory(mode: str, counters: Counters):
    from .payloads import HELLO, http_response
    response = http_response()

    class Hello(asyncio.Protocol):
        def connection_made(self, transport):
            counters.opened()
            transport.write(HELLO)
            transport.close()

        def connection_lost(self, exc):
            counters.open -= 1

    class HttpAsyncio(asyncio.Protocol):
        def connection_made(self, transport):
            counters.opened()
            self.transport = transport
            self.buf = b""

        def data_received(self, data):
            if self.buf is None:
                return
            self.buf += data
            if b"\r\n\r\n" in self.buf:
                self.buf = None
                self.transport.write(response)
                self.transport.close()

        def connection_lost(self, exc):
            counters.open -= 1

    class Hold(asyncio.Protocol):
        def connection_made(self, transport):
            counters.opened()

        def connection_lost(self, exc):
            counters.open -= 1

    return {"hello": Hello, "http-asyncio": HttpAsyncio, "hold": Hold}[mode]


async def serve_asyncio(mode: str, host: str, port: int, max_seconds: float) -> dict:
    loop = asyncio.get_running_loop()
    counters = Counters()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result("signal"))
    loop.add_signal_handler(signal.SIGUSR1,
                            lambda: print(json.dumps(counters.as_dict()), file=sys.stderr,
                                          flush=True))
    server = await loop.create_server(_proto_factory(mode, counters), host, port,
                                      backlog=BACKLOG, reuse_address=True)
    print(f"listening on {host}:{port} server={mode}", file=sys.stderr, flush=True)
    try:
        await asyncio.wait_for(stop, max_seconds)
        how = "signal"
    except asyncio.TimeoutError:
        how = "max-seconds"
    server.close()
    return {"stopped_by": how, **counters.as_dict()}


def serve_http_server(host: str, port: int, max_seconds: float) -> dict:
    from .payloads import PAGE

    counters = Counters()
    with tempfile.TemporaryDirectory(prefix="tcplab-bench-www-") as www:
        with open(os.path.join(www, "index.html"), "wb") as f:
            f.write(PAGE)

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **kw):
                super().__init__(*a, directory=www, **kw)

            def log_message(self, *a):
                pass

            def setup(self):
                counters.opened()
                super().setup()

            def finish(self):
                super().finish()
                counters.open -= 1

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = BACKLOG

        srv = Server((host, port), Handler)
        done = threading.Event()
        how = ["max-seconds"]

        def stop(signum, frame):
            how[0] = "signal"
            done.set()
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True)
        t.start()
        print(f"listening on {host}:{port} server=http.server", file=sys.stderr, flush=True)
        done.wait(max_seconds)
        srv.shutdown()
        srv.server_close()
    return {"stopped_by": how[0], **counters.as_dict()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.servers",
                                description="kernel-TCP reference servers for invoke bench")
    p.add_argument("mode", choices=("hello", "http-asyncio", "http", "hold"))
    p.add_argument("--listen", required=True, metavar="ADDR:PORT")
    p.add_argument("--max-seconds", type=float, default=300.0,
                   help="stop by itself after this long")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    raise_nofile(20000)
    if args.mode == "http":
        res = serve_http_server(host, int(port), args.max_seconds)
    else:
        res = asyncio.run(serve_asyncio(args.mode, host, int(port), args.max_seconds))
    print(json.dumps(res), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
