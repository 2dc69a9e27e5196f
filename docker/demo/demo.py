"""What every demo service shares: the command line (--host, --port,
--exit-with-parent; DEMO_HOST and DEMO_PORT in the environment), the aiohttp
low-level server, and stopping when the script that started it is gone
(scripts/run)."""
import argparse
import asyncio
import os

from aiohttp import web


async def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    raise web.GracefulExit()


async def _main(handler, name: str, args: argparse.Namespace) -> None:
    runner = web.ServerRunner(web.Server(handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"{name} demo listening on {args.host}:{args.port}", flush=True)
    if args.exit_with_parent:
        await _exit_with_parent(os.getppid())
    else:
        await asyncio.Event().wait()


def serve(handler, name: str, default_port: int, description: str) -> None:
    """Runs `handler` (an aiohttp low-level request handler) until stopped."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=os.environ.get("DEMO_HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int,
                        default=int(os.environ.get("DEMO_PORT", str(default_port))))
    parser.add_argument("--exit-with-parent", action="store_true")
    try:
        asyncio.run(_main(handler, name, parser.parse_args()))
    except (KeyboardInterrupt, web.GracefulExit):
        pass
