"""Test backends shared by the integration tests, one module per kind:

- http: HttpBackend, an aiohttp server that records and echoes requests.
- raw: RawBackend, a socket server whose handler writes exact bytes, and
  ServerSide, the reading helpers such handlers use.
- h2: H2Backend, the HTTP/2 (h2c or TLS) upstream on python3-h2.
- tls: TlsBackend, the echo backend behind TLS.
- certs: a throw-away CA and certificates made with the openssl command.
- server: ThreadedServer, the listener and accept thread of RawBackend and
  H2Backend.

Each server runs in threads of the test process, on a free loopback port,
and is stopped by the fixture that started it (conftest.py)."""
