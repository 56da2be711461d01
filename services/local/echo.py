"""An HTTP backend that says who it is and what it was asked, for the demo and the end-to-end tests.

Every method on every path answers 200 with JSON `{"name", "host", "path", "method", "headers"}`, so a
client behind the gateway can tell which backend a route reached and what the gateway forwarded.
"""

from __future__ import annotations

from aiohttp import web

NAME_KEY = web.AppKey("name", str)


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "name": request.app[NAME_KEY],
            "host": request.host,
            "path": request.path_qs,
            "method": request.method,
            "headers": dict(request.headers),
        }
    )


def make_app(name: str) -> web.Application:
    app = web.Application()
    app[NAME_KEY] = name
    app.router.add_route("*", "/{tail:.*}", _echo)
    return app


class EchoServer:
    """An echo backend on the running event loop; `port` is known after `start()`."""

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(self.name), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"
