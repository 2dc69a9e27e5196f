"""TlsBackend: HttpBackend's echo server behind TLS, with the backend.test
certificate of the test CA (backends/certs.py), recording whether each
request came on a resumed TLS session."""
import asyncio
import ssl
import threading

from aiohttp import web

from backends.http import HttpBackend


class TlsBackend(HttpBackend):
    """The echo backend behind TLS with the test CA's backend.test certificate."""

    def __init__(self, certs, name="tls"):
        super().__init__(name)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(certs / "backend.pem"), str(certs / "backend.key"))
        self.reused = []

    async def _dispatch(self, request):
        obj = request.transport.get_extra_info("ssl_object") if request.transport else None
        with self.lock:
            self.reused.append(bool(obj and obj.session_reused))
        return await super()._dispatch(request)

    def start(self):
        ready = threading.Event()

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)

            async def setup():
                server = web.Server(self._dispatch)
                self.runner = web.ServerRunner(server, access_log=None, shutdown_timeout=1.0)
                await self.runner.setup()
                await web.SockSite(self.runner, self.sock, ssl_context=self.ctx,
                                   shutdown_timeout=1.0).start()

            self.loop.run_until_complete(setup())
            ready.set()
            self.loop.run_forever()
            try:
                self.loop.run_until_complete(asyncio.wait_for(self.runner.cleanup(), timeout=3))
            except Exception:  # noqa: BLE001
                pass
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True, name=f"backend-{self.name}")
        self.thread.start()
        assert ready.wait(10), "backend did not start"
        return self
