"""An HTTP reverse proxy that counts the requests passing through it, by method and first path segment.

The scale benchmark puts one in front of the S3 server (rclone logs no per-request line): clients use the
proxy's address as their endpoint, the proxy forwards each request unchanged, Host header included (S3's
SigV4 signature covers it), and streams the answer back. Runs in a background thread with its own event loop.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length"}


class CountingProxy:
    def __init__(self, *, listen_host: str, listen_port: int, upstream: str) -> None:
        self.listen_host, self.listen_port, self.upstream = listen_host, listen_port, upstream.rstrip("/")
        self.counts: collections.Counter[str] = collections.Counter()
        self.failed = 0  # requests the upstream did not answer (it was down): the client saw a 502
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.listen_port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"counting proxy on {self.url} did not start")
        return self

    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, Any]:
        return {"total": self.total(), "failed": self.failed, "by_kind": dict(self.counts.most_common())}

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, self.listen_host, self.listen_port).start())
        self._session = self._loop.run_until_complete(self._new_session())
        self._started.set()
        self._loop.run_forever()

    @staticmethod
    async def _new_session() -> ClientSession:
        return ClientSession(timeout=ClientTimeout(total=None), auto_decompress=False)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        segment = request.path.strip("/").split("/", 1)[0]
        kind = f"{request.method} {'bucket' if segment else '/'}{'/key' if request.path.count('/') > 1 else ''}"
        self.counts[kind] += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with self._session.request(request.method, f"{self.upstream}{request.path_qs}", headers=headers,
                                             data=body, allow_redirects=False) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
                if "Content-Length" in upstream.headers:
                    response.content_length = int(upstream.headers["Content-Length"])
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(1 << 16):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except OSError:
            self.failed += 1
            return web.Response(status=502, text="upstream down")
