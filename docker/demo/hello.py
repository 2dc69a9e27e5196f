#!/usr/bin/python3
"""Demo hello service: answers any method and path with
"hello from sluice demo\\n" as text/plain."""
from aiohttp import web

from demo import serve

BODY = b"hello from sluice demo\n"


async def hello(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="text/plain")


if __name__ == "__main__":
    serve(hello, "hello", 9002, __doc__)
