"""minderd's web page in a real browser: headless Chromium, driven through chromedriver's
WebDriver HTTP API (the standard's JSON wire protocol, with nothing but the standard library).

Usage: web_browser.py ADDR MINDER SOCKET DIR USER:PASSWORD
  ADDR    host:port of minderd's TCP listener, which asks for USER:PASSWORD (Basic)
  MINDER  the minder binary; SOCKET the daemon's unix socket; DIR a scratch directory

The browser is given the credentials in the page's URL (http://USER:PASSWORD@ADDR/), as a
headless browser cannot answer the password prompt; it then sends them from its own cache,
as it would after a prompt, with every request to that origin, the forged one included.

It opens the page, clicks Stop on `ping` and sees the row become STOPPED without a reload,
measures the page's first paint and the event-to-screen latency of a state change (printed,
not asserted), follows `talk`'s stdout in the page and sees new lines arrive, then loads a page
from another origin that auto-submits a form POSTing `stop talk` to minderd and checks that it
was refused. Prints OK at the end; any failure raises.
"""

import http.server
import json
import subprocess
import sys
import threading

from webdriver import Driver, PrefixProxy, wait_for

ADDR, MINDER, SOCKET, DIR, CRED = sys.argv[1:6]
BASE = f"http://{CRED}@{ADDR}/"
# The page's URL as location shows it, without the credentials.
HERE = "return location.origin + location.pathname + location.search;"


def minder(*args):
    out = subprocess.run([MINDER, "-s", f"unix://{SOCKET}", *args], capture_output=True, text=True)
    return out


def state(name):
    out = minder("--json", "status", name)
    return json.loads(out.stdout)["processes"][0]["state"]


def row_state(d, name):
    return d.js("const r = document.querySelector(`tr[data-name='${arguments[0]}']`); return r && r.dataset.state;", name)


def main():
    d = Driver(DIR)
    try:
        # First paint, from navigation start (the browser's own measure).
        d.get(BASE)
        fcp = wait_for(
            "the first contentful paint",
            lambda: d.js(
                "const e = performance.getEntriesByName('first-contentful-paint')[0]; return e ? e.startTime : null;"
            ),
        )
        print(f"first contentful paint: {fcp:.1f} ms")
        wait_for(
            "the event stream's snapshot",
            lambda: d.js("return (window.minderSnapshots || 0) >= 1 && !document.getElementById('live').hidden;"),
        )
        print(f"page live (snapshot drawn) after: {d.js('return window.minderReceived();'):.1f} ms")

        # Stop from the page: the row changes without a reload.
        d.js("window.notReloaded = 42;")
        assert row_state(d, "ping") == "RUNNING", row_state(d, "ping")
        d.click("tr[data-name='ping'] button[value='stop ping']")
        wait_for("the ping row to show STOPPED", lambda: row_state(d, "ping") == "STOPPED")
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"
        assert state("ping") == "STOPPED", state("ping")
        assert "stopped" in d.js("return document.querySelector(`tr[data-name='ping'] td.state`).textContent;")
        wait_for("the action's message", lambda: "Process ping stopped" in d.js("return document.getElementById('message').textContent;"))

        # A change made elsewhere (the CLI) reaches the page: event-to-screen latency.
        latencies = []
        for i in range(5):
            d.js("window.minderLatencies = [];")
            verb, want = ("start", "RUNNING") if i % 2 == 0 else ("stop", "STOPPED")
            r = minder(verb, "ping")
            assert r.returncode == 0, r.stderr
            wait_for(f"the ping row to show {want}", lambda: row_state(d, "ping") == want)
            got = wait_for(
                "a latency measure",
                lambda: d.js(
                    "return (window.minderLatencies || []).filter(l => l.name === 'ping' && l.state === arguments[0]);",
                    want,
                ),
            )
            latencies.append(got[-1]["ms"])
        latencies.sort()
        print(f"event-to-screen latency: median {latencies[len(latencies) // 2]} ms, max {latencies[-1]} ms over {len(latencies)} changes")
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"

        # The filter box hides rows that do not match.
        d.js("const f = document.getElementById('filter'); f.value = 'talk'; f.dispatchEvent(new Event('input'));")
        assert d.js("return document.querySelector(`tr[data-name='ping']`).hidden;") is True
        assert d.js("return document.querySelector(`tr[data-name='talk']`).hidden;") is False
        d.js("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));")

        # Live CPU and memory: sampled from status.json every 5 s while the page is shown.
        # (`minder --json status` reads the same cgroup files the page's figures come from.)
        measured = json.loads(minder("--json", "status", "talk").stdout)["processes"][0].get("cpu_seconds")
        res = "return document.querySelector(`tr[data-name='talk'] td.pid span.res`).textContent;"
        if measured is not None:
            shown = wait_for("talk's CPU share in its row", lambda: "% CPU" in d.js(res) and d.js(res), timeout=20.0)
            print(f"live resources of talk: {shown.strip()}")
        else:
            # Without cgroups minderd measures no tree: the row shows no figure rather than a wrong one.
            assert d.js(res) == "", d.js(res)
            print("live resources: not measured here (no cgroup), none shown")

        # Following a log in the page: new lines keep arriving.
        log_ok = follow_log(d)

        # Behind a reverse proxy under a path prefix.
        prefixed(d)

        # A forged cross-site POST: a page on another origin auto-submits a form to minderd.
        forged(d)
        assert state("talk") == "RUNNING", "the forged POST stopped talk"
        print("forged cross-site POST: refused (403), talk still RUNNING")
        print("log view: " + log_ok)
        print("under a proxy's /supervisor/ prefix: live rows, actions and redirects all stayed under it")
    finally:
        d.quit()
    print("OK")


def follow_log(d):
    d.click("tr[data-name='talk'] a[data-stream='stdout']")
    wait_for("the log view to open", lambda: d.js("return !document.getElementById('log').hidden;"))
    first = wait_for(
        "talk's first whole line",
        lambda: "\n" in d.js("return document.getElementById('logtext').textContent;")
        and d.js("return document.getElementById('logtext').textContent;"),
    )
    # Whole lines only (the tail starts 1 KiB back, possibly mid-line).
    whole = first[: first.rfind("\n")].splitlines()
    n = max(int(l.split()[1]) for l in whole if l.startswith("line ") and l.split()[1].isdigit())
    last = f"line {n}"
    wait_for(
        f"a line after {last!r} in the page",
        lambda: f"line {n + 2}\n" in d.js("return document.getElementById('logtext').textContent;"),
    )
    assert d.js("return window.notReloaded;") == 42, "the page was reloaded"
    return f"followed talk's stdout from {last!r} to 'line {n + 2}' without a reload"


def prefixed(d):
    """The page behind a reverse proxy that serves minderd under /supervisor/ (stripping the
    prefix, as nginx's `location /supervisor/ { proxy_pass http://minderd/; }` does): every
    request the page makes must stay under the prefix, the live stream must pass through, and
    the redirect after a GET action must land back under it."""
    with PrefixProxy("/supervisor", ADDR) as proxy:
        base = proxy.base
        d.get(base.replace("http://", f"http://{CRED}@"))
        wait_for(
            "the snapshot through the proxy",
            lambda: d.js("return (window.minderSnapshots || 0) >= 1 && !document.getElementById('live').hidden;"),
        )
        d.js("window.notReloaded = 42;")
        want = "STOPPED" if row_state(d, "ping") == "RUNNING" else "RUNNING"
        verb = "stop" if want == "STOPPED" else "start"
        d.click(f"tr[data-name='ping'] button[value='{verb} ping']")
        wait_for(f"ping to show {want} through the proxy", lambda: row_state(d, "ping") == want)
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"
        assert state("ping") == want
        # Supervisor's GET action, typed in the address bar: the redirect stays under the prefix.
        verb = "start" if want == "STOPPED" else "stop"
        d.get(base + f"index.html?processname=ping&action={verb}")
        href = wait_for(
            "the redirect after the action",
            lambda: d.js("return location.search.includes('message=') && (" + HERE[len("return ") : -1] + ");"),
        )
        assert href.startswith(base + "?message=Process%20ping%20"), href
        assert proxy.outside == [], f"requests escaped the prefix: {proxy.outside}"


def forged(d):
    # The attacker does not know the password: the browser's cache supplies it.
    target = f"http://{ADDR}/index.html"

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            page = (
                "<!DOCTYPE html><html><body>"
                f'<form id="f" method="post" action="{target}">'
                '<input type="hidden" name="action" value="stop talk"></form>'
                "<script>document.getElementById('f').submit()</script></body></html>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    # Threaded: a connection the browser opens speculatively and never uses must not hold the
    # server (and shutdown) until it times out.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # "localhost" is another site than "127.0.0.1": a cross-site request.
        d.get(f"http://localhost:{server.server_address[1]}/")
        text = wait_for(
            "minderd's answer to the forged POST",
            lambda: d.js(
                "return (location.origin + location.pathname) === arguments[0] && document.body && document.body.innerText;",
                target,
            ),
        )
        assert "Forbidden" in text and "cross-site" in text, text
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
