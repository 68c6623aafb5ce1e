"""What the browser tests share: a WebDriver client for headless Chromium (Debian's chromium
and chromium-driver), spoken over chromedriver's HTTP API with nothing but the standard
library, a polling wait, and a reverse proxy that serves an upstream under a path prefix.

Used by tests/e2e/web_browser.py (minderd's page) and fleet/tests/fleet_browser.py (the
fleet's UI). The Rust test that runs either script writes this file next to it (include_str!),
so `import webdriver` finds it in the script's own directory.
"""

import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_for(what, cond, timeout=15.0):
    """Polls cond until it returns something true, or fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


class Driver:
    """The few WebDriver commands the browser tests need: one chromedriver and one headless
    Chromium, their log and profile in `scratch`, the window `width` pixels wide."""

    def __init__(self, scratch, width=1200):
        self.port = free_port()
        self.log = open(os.path.join(scratch, "chromedriver.log"), "w")
        self.proc = subprocess.Popen(
            ["chromedriver", f"--port={self.port}"], stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for("chromedriver", self._ready)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    # Navigation returns at DOMContentLoaded: with "normal", chromedriver waits
                    # for the page's never-ending event stream to go quiet (about a minute).
                    "pageLoadStrategy": "eager",
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": [
                            "--headless=new",
                            "--no-sandbox",  # tests run as root
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--no-first-run",
                            f"--user-data-dir={os.path.join(scratch, 'chromium-profile')}",
                            f"--window-size={width},900",
                        ],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _ready(self):
        try:
            with urllib.request.urlopen(self.url + "/status", timeout=1) as r:
                return json.load(r)["value"]["ready"]
        except (OSError, ValueError, KeyError):
            return False

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"WebDriver {method} {path}: {e.code} {e.read().decode()[:500]}")

    def cmd(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self.cmd("POST", "/url", {"url": url})

    def js(self, script, *args):
        return self.cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def click(self, css):
        el = self.cmd("POST", "/element", {"using": "css selector", "value": css})
        eid = next(iter(el.values()))
        self.cmd("POST", f"/element/{eid}/click", {})

    def quit(self):
        try:
            self.cmd("DELETE", "")
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.log.close()


class PrefixProxy:
    """A reverse proxy on a free loopback port that serves `upstream` (host:port) under
    `prefix` (as "/fleet"), stripping it as nginx's `location /fleet/ { proxy_pass
    http://upstream/; }` does. A request outside the prefix is answered 404 and kept in
    `outside`, for the test to say that the page let one escape. Responses are streamed as
    they come (an event stream never ends). Use as a context manager; `base` is its URL."""

    def __init__(self, prefix, upstream):
        outside = self.outside = []
        host, port = upstream.rsplit(":", 1)

        class Handler(http.server.BaseHTTPRequestHandler):
            def forward(self):
                if not self.path.startswith(prefix + "/"):
                    outside.append(self.path)
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                up = http.client.HTTPConnection(host, int(port), timeout=60)
                up.request(self.command, self.path[len(prefix) :], body=body, headers=headers)
                r = up.getresponse()
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length"):
                        self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                # Streamed as it comes, delimited by the close.
                try:
                    while True:
                        chunk = r.read1(65536)
                        if not chunk:
                            break
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:
                    pass
                finally:
                    up.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

            def log_message(self, *args):
                pass

        # Threaded: one request per connection, and the event stream holds its own.
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}{prefix}/"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        return False
