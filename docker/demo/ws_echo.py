#!/usr/bin/python3
"""Demo WebSocket echo service: accepts a WebSocket on any path and sends
every text or binary message back unchanged; a plain HTTP request gets a
short text answer."""
from aiohttp import WSMsgType, web

from demo import serve


async def ws_echo(request: web.BaseRequest) -> web.StreamResponse:
    ws = web.WebSocketResponse()
    if not ws.can_prepare(request).ok:
        return web.Response(text="websocket echo: connect with a WebSocket client\n")
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


if __name__ == "__main__":
    serve(ws_echo, "ws-echo", 9003, __doc__)
