#!/usr/bin/python3
"""Demo echo service: answers any method and path with JSON describing the
request it received: method, path, query, headers, body_length. A request
header X-Demo-Delay-Ms (at most 30000) delays the answer: a slow request, to
watch a drain."""
import asyncio

from aiohttp import web

from demo import serve


async def echo(request: web.BaseRequest) -> web.Response:
    length = 0
    async for chunk in request.content.iter_any():
        length += len(chunk)
    try:
        delay_ms = min(max(int(request.headers.get("X-Demo-Delay-Ms", "0")), 0), 30000)
    except ValueError:
        delay_ms = 0
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000)
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
