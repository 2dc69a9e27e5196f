"""A real browser for the tests: Debian's chromium, headless, driven over the
Chrome DevTools Protocol on --remote-debugging-pipe (the browser reads
commands on fd 3 and writes answers and events on fd 4; each message is one
JSON object followed by a NUL byte). Only the standard library.

    with Chromium(tmp_path) as browser:
        page = browser.new_page()
        page.navigate("http://127.0.0.1:9901/")
        page.evaluate("document.title")
        page.screenshot(path)
        page.problems()   # console errors, exceptions, failed loads

Everything is bounded in time; the browser is stopped by its PID.
"""
import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time

import pytest

START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 15.0


def chromium_binary() -> str:
    """The chromium executable; a missing one fails the test (scripts/deps installs it)."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("chromium is not installed: run scripts/deps (Debian package chromium)")
    return ""


class CdpError(AssertionError):
    pass


class Chromium:
    def __init__(self, workdir, width=1440, height=1000):
        self.workdir = workdir
        self.size = (width, height)
        self.proc = None
        self.next_id = 0
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.replies = {}
        self.events = []  # (sessionId, method, params), in arrival order
        self.closed = False

    # process ---------------------------------------------------------------
    def start(self):
        profile = self.workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def child_fds():
            # Move both ends above 3 and 4 first, so neither dup2 clobbers the other.
            r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
            w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--mute-audio",
                "--hide-scrollbars", f"--user-data-dir={profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "--remote-debugging-pipe", "about:blank"]
        self.log_path = self.workdir / "chromium.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, close_fds=False, preexec_fn=child_fds,
                                     cwd=self.workdir)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.send("Browser.getVersion", timeout=START_TIMEOUT)
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def close(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.send("Browser.close", timeout=5)
            except (CdpError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for fd in (self.to_browser, self.from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.reader.join(5)
        self._log.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    # protocol --------------------------------------------------------------
    def _read(self):
        buf = b""
        while True:
            try:
                data = os.read(self.from_browser, 65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self.cond:
                    if "id" in msg:
                        self.replies[msg["id"]] = msg
                    else:
                        self.events.append((msg.get("sessionId"), msg.get("method"),
                                            msg.get("params", {})))
                    self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def send(self, method, params=None, session=None, timeout=COMMAND_TIMEOUT):
        with self.cond:
            self.next_id += 1
            mid = self.next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self.cond:
            while mid not in self.replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise CdpError(f"no answer to {method} within {timeout}s "
                                   f"(browser {'exited' if self.closed else 'silent'}):\n{self.log()}")
                self.cond.wait(left)
            reply = self.replies.pop(mid)
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def new_page(self):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        return Page(self, session["sessionId"])


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def send(self, method, params=None, timeout=COMMAND_TIMEOUT):
        return self.browser.send(method, params, self.session, timeout)

    def navigate(self, url):
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CdpError(f"cannot load {url}: {result['errorText']}")

    def evaluate(self, expression):
        """The value of a JavaScript expression (JSON-serialisable)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise CdpError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout, what):
        """Polls `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                     f"(last value {value!r}); problems: {self.problems()}")
            time.sleep(0.2)

    def events(self, method=None):
        with self.browser.cond:
            return [(m, p) for s, m, p in self.browser.events
                    if s == self.session and (method is None or m == method)]

    def problems(self):
        """Console errors and warnings, uncaught exceptions, error log entries, failed loads."""
        out = []
        for method, params in self.events():
            if method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error", "warning", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                out.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                entry = params["entry"]
                out.append(f"log {entry['level']}: {entry.get('text')} {entry.get('url', '')}")
            elif method == "Network.loadingFailed":
                out.append(f"load failed: {params.get('errorText')}")
        return out

    def requested_urls(self):
        return [p["request"]["url"] for m, p in self.events("Network.requestWillBeSent")]

    def screenshot(self, path):
        """Saves a PNG of the whole page (beyond the window's height)."""
        height = self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 1000
        width = self.browser.size[0]
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        self.send("Emulation.clearDeviceMetricsOverride")
        path.write_bytes(base64.b64decode(data))
        return path
