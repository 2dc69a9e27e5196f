"""What every demo service shares: the command line (--host, --port,
--exit-with-parent; DEMO_HOST and DEMO_PORT in the environment), the aiohttp
low-level server, stopping at once on SIGTERM or SIGINT (as PID 1 in a
container, where the default action of SIGTERM is to ignore it), and
stopping when the script that started it is gone (scripts/run)."""
import argparse
import asyncio
import os
import signal

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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait())]
    if args.exit_with_parent:
        waits.append(asyncio.ensure_future(_exit_with_parent(os.getppid())))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        # In-flight requests get a moment; a demo never holds a stop for long.
        await asyncio.wait_for(runner.cleanup(), timeout=3)


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
