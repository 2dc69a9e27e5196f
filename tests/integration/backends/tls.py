"""TlsBackend: HttpBackend's echo server behind TLS, with the backend.test
certificate of the test CA (backends/certs.py), recording whether each
request came on a resumed TLS session."""
import ssl

from backends.http import HttpBackend


class TlsBackend(HttpBackend):
    """The echo backend behind TLS with the test CA's backend.test certificate."""

    def __init__(self, certs, name="tls"):
        super().__init__(name)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(certs / "backend.pem"), str(certs / "backend.key"))
        self.ssl_context = self.ctx  # HttpBackend.start serves with it
        self.reused = []

    async def _dispatch(self, request):
        obj = request.transport.get_extra_info("ssl_object") if request.transport else None
        with self.lock:
            self.reused.append(bool(obj and obj.session_reused))
        return await super()._dispatch(request)
