#!/usr/bin/python3
"""Demo echo service: answers any method and path with JSON describing the
request it received: method, path, query, headers, body_length."""
from aiohttp import web

from demo import serve


async def echo(request: web.BaseRequest) -> web.Response:
    length = 0
    async for chunk in request.content.iter_any():
        length += len(chunk)
    path, _, query = request.raw_path.partition("?")
    return web.json_response({
        "method": request.method,
        "path": path,
        "query": query,
        "headers": {k: v for k, v in request.headers.items()},
        "body_length": length,
    })


if __name__ == "__main__":
    serve(echo, "echo", 9001, __doc__)
