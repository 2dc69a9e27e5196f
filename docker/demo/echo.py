#!/usr/bin/python3
"""Demo echo service: answers any method and path with JSON describing the
request it received: method, path, query, headers, body_length."""
import argparse
import asyncio
import os

from aiohttp import web


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


async def exit_with_parent(parent: int) -> None:
    # scripts/run: stop when the script that started us is gone.
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    raise web.GracefulExit()


async def main(args: argparse.Namespace) -> None:
    runner = web.ServerRunner(web.Server(echo), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"echo demo listening on {args.host}:{args.port}", flush=True)
    if args.exit_with_parent:
        await exit_with_parent(os.getppid())
    else:
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", "9001")))
    parser.add_argument("--exit-with-parent", action="store_true")
    try:
        asyncio.run(main(parser.parse_args()))
    except (KeyboardInterrupt, web.GracefulExit):
        pass
