#!/usr/bin/python3
"""Demo hello service: answers any method and path with
"hello from sluice demo\\n" as text/plain, and names the instance that
answered in X-Served-By (its host name: the container's, when replicas run
in Docker)."""
import socket

from aiohttp import web

from demo import serve

BODY = b"hello from sluice demo\n"


async def hello(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="text/plain",
                        headers={"X-Served-By": socket.gethostname()})


if __name__ == "__main__":
    serve(hello, "hello", 9002, __doc__)
