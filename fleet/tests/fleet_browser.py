"""The fleet's web UI in a real browser: headless Chromium (Debian's chromium and
chromium-driver), driven through chromedriver's WebDriver HTTP API with nothing but the
standard library, as tests/e2e/web_browser.py drives minderd's page.

Usage: fleet_browser.py ADDR MINDER SOCK1 SOCK2 DIR ADMIN:PASSWORD VIEWER:PASSWORD
  ADDR     host:port of minder-fleet, whose nodes are m1 (SOCK1) and m2 (SOCK2)
  MINDER   the minder binary, to change and read the nodes behind the fleet's back
  DIR      a scratch directory

It logs in through the form, filters, stops web:app on m1 and sees the row change without a
reload, sees a change made on m2 with the CLI arrive, follows talk's stdout and sees lines the
program writes after the view opened, logs out (the page is then the login form and the API
answers 401), and logs in as a viewer, whose page has no action buttons; then does it again
behind a reverse proxy that serves the fleet under /fleet/ (every request must stay under the
prefix). Prints OK at the end; any failure raises.
"""

import json
import subprocess
import sys
import time

from webdriver import Driver, PrefixProxy, wait_for

ADDR, MINDER, SOCK1, SOCK2, DIR, ADMIN, VIEWER = sys.argv[1:8]
BASE = f"http://{ADDR}/"
SOCKS = {"m1": SOCK1, "m2": SOCK2}


def minder(node, *args):
    return subprocess.run([MINDER, "-s", f"unix://{SOCKS[node]}", *args], capture_output=True, text=True)


def state(node, name):
    out = minder(node, "--json", "status", name)
    return json.loads(out.stdout)["processes"][0]["state"]


ROW = "tr[data-node='{}'][data-name='{}']"


def row_state(d, node, name):
    return d.js(
        "const r = document.querySelector(arguments[0]); return r && r.dataset.state;", ROW.format(node, name)
    )


def row_hidden(d, node, name):
    return d.js("return document.querySelector(arguments[0]).hidden;", ROW.format(node, name))


def path(d):
    return d.js("return location.pathname;")


def login(d, cred, base=BASE):
    user, password = cred.split(":", 1)
    prefix = base[base.index("/", len("http://")) :]
    d.get(base)
    # Not logged in: the dashboard sends the browser to the login form.
    wait_for(
        "the login form",
        lambda: path(d) == prefix + "login" and d.js("return !!document.getElementById('login');"),
    )
    d.js(
        "const f = document.getElementById('login');"
        "f.elements.username.value = arguments[0]; f.elements.password.value = arguments[1];",
        user,
        password,
    )
    d.click("#login button[type=submit]")
    wait_for("the dashboard", lambda: path(d) == prefix and d.js("return document.body.dataset.mode;") == "fleet")
    wait_for(
        "the live snapshot with both nodes' rows",
        lambda: d.js("return (window.fleetSnapshots || 0) >= 1 && !document.getElementById('live').hidden;")
        and row_state(d, "m1", "web:app")
        and row_state(d, "m2", "web:app"),
    )


def main():
    # A phone's width: the page must be usable there.
    d = Driver(DIR, width=420)
    try:
        login(d, ADMIN)
        counts = d.js("return document.getElementById('counts').textContent;")
        # m1 (prod), m2 (staging), and m2 again through XML-RPC (legacy).
        assert "3 nodes connected" in counts and "3 environments" in counts, counts
        assert d.js("return document.getElementById('who').textContent;").startswith(ADMIN.split(":")[0])
        # An admin sees the users (the viewer is one) and the activity log (its own login).
        wait_for(
            "the users panel",
            lambda: d.js("return !document.getElementById('admin').hidden && !!document.querySelector(`#users tr[data-user='watcher']`);"),
        )
        wait_for(
            "the activity log's login line",
            lambda: "login" in d.js("return document.querySelector('#activity tbody').textContent;"),
        )

        # The filter: words and a state.
        d.js("const f = document.getElementById('filter'); f.value = 'm1 app'; f.dispatchEvent(new Event('input'));")
        assert row_hidden(d, "m1", "web:app") is False
        assert row_hidden(d, "m2", "web:app") is True
        assert row_hidden(d, "m1", "talk") is True
        d.js("const f = document.getElementById('filter'); f.value = ''; f.dispatchEvent(new Event('input'));")
        assert row_hidden(d, "m2", "web:app") is False

        # Stop web:app on m1 from the page: the row changes without a reload; m2 is untouched.
        d.js("window.notReloaded = 42;")
        assert row_state(d, "m1", "web:app") == "RUNNING"
        d.click(ROW.format("m1", "web:app") + " button[data-act='stop']")
        wait_for("m1's web:app row to show STOPPED", lambda: row_state(d, "m1", "web:app") == "STOPPED")
        assert state("m1", "web:app") == "STOPPED"
        assert state("m2", "web:app") == "RUNNING"
        assert row_state(d, "m2", "web:app") == "RUNNING"
        wait_for("the action's message", lambda: "app" in d.js("return document.getElementById('message').textContent;"))
        d.js("const s = document.getElementById('statefilter'); s.value = 'STOPPED'; s.dispatchEvent(new Event('change'));")
        assert row_hidden(d, "m1", "web:app") is False and row_hidden(d, "m2", "web:app") is True
        d.js("const s = document.getElementById('statefilter'); s.value = ''; s.dispatchEvent(new Event('change'));")

        # A change made on a node behind the fleet's back reaches the page.
        t = time.monotonic()
        r = minder("m2", "stop", "web:app")
        assert r.returncode == 0, r.stderr
        wait_for("m2's web:app row to show STOPPED", lambda: row_state(d, "m2", "web:app") == "STOPPED")
        print(f"a CLI stop on m2 shown in the page after {1000 * (time.monotonic() - t):.0f} ms (CLI included)")
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"

        # Grouping by Supervisor group across nodes: the group's actions on every node.
        d.js("const g = document.getElementById('groupby'); g.value = 'group'; g.dispatchEvent(new Event('change'));")
        assert d.js("return !!document.querySelector(`tr.group[data-key='web'] button[data-groupact='start']`);")
        d.click("tr.group[data-key='web'] button[data-groupact='start']")
        wait_for(
            "group web started on both nodes",
            lambda: row_state(d, "m1", "web:app") == "RUNNING" and row_state(d, "m2", "web:app") == "RUNNING",
        )

        # Following talk's stdout on m1: lines written after the view opened appear.
        d.click(ROW.format("m1", "talk") + " button[data-log='stdout']")
        text = lambda: d.js("return document.getElementById('logtext').textContent;")
        first = wait_for("talk's first lines", lambda: "line " in text() and text())
        n = max(int(l.split()[1]) for l in first.splitlines() if l.startswith("line "))
        wait_for(f"line {n + 3} in the log view", lambda: f"line {n + 3}\n" in text())
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"
        print(f"log view: followed talk's stdout from 'line {n}' to 'line {n + 3}' without a reload")

        # The admin changes the viewer's role in the users panel, and back.
        for role in ("operator", "viewer"):
            d.js(
                "const s = document.querySelector(`select[data-roleof='watcher']`); s.value = arguments[0];"
                "s.dispatchEvent(new Event('change', { bubbles: true }));",
                role,
            )
            wait_for(
                f"watcher shown as {role}",
                lambda: d.js("const r = document.querySelector(`#users tr[data-user='watcher']`); return r && r.dataset.role;") == role,
            )

        # Log out: the login form, and the session is gone for the API too.
        d.click("#logout")
        wait_for("the login form after logout", lambda: path(d) == "/login")
        status = d.js(
            "const r = new XMLHttpRequest(); r.open('GET', 'api/v2/nodes/', false); r.send(); return r.status;"
        )
        assert status == 401, status
        d.get(BASE)
        wait_for("the dashboard sending back to the login form", lambda: path(d) == "/login")

        # A viewer: the same rows, no action anywhere, no admin panel.
        login(d, VIEWER)
        acts = d.js("return document.querySelectorAll('button[data-act], button[data-nodeact], button[data-groupact]').length;")
        assert acts == 0, f"{acts} action buttons shown to a viewer"
        d.js("const g = document.getElementById('groupby'); g.value = 'group'; g.dispatchEvent(new Event('change'));")
        assert d.js("return document.querySelectorAll('button[data-groupact]').length;") == 0
        assert d.js("return document.querySelectorAll('button[data-log]').length;") > 0, "a viewer may read logs"
        assert d.js("return document.getElementById('admin').hidden;") is True
        assert d.js("return document.body.dataset.readonly;") == "true"
        print("viewer: rows and logs, no action buttons, no admin panel")

        # Any user changes its own password; the new one logs in.
        user, old = VIEWER.split(":", 1)
        d.click("#passwordpanel summary")
        d.js(
            "const f = document.getElementById('passwd'); f.elements.old_password.value = arguments[0];"
            "f.elements.new_password.value = arguments[1];",
            old,
            old + "-new",
        )
        d.click("#passwd button[type=submit]")
        wait_for("the password changed", lambda: "changed" in d.js("return document.getElementById('message').textContent;"))
        d.click("#logout")
        wait_for("the login form after logout", lambda: path(d) == "/login")
        login(d, f"{user}:{old}-new")
        print("a viewer changed its password from the page, and logged in with the new one")
        d.click("#logout")
        wait_for("the login form after logout", lambda: path(d) == "/login")
        prefixed(d)
    finally:
        d.quit()
    print("OK")


def prefixed(d):
    """The UI behind a reverse proxy that serves the fleet under /fleet/, stripping the prefix
    (nginx's `location /fleet/ { proxy_pass http://fleet/; }`): the login redirect, the form,
    the assets, the event stream and the actions must all stay under the prefix."""
    with PrefixProxy("/fleet", ADDR) as proxy:
        base = proxy.base
        login(d, ADMIN, base)
        d.js("window.notReloaded = 42;")
        want, verb = ("STOPPED", "stop") if row_state(d, "m1", "talk") == "RUNNING" else ("RUNNING", "start")
        d.click(ROW.format("m1", "talk") + f" button[data-act='{verb}']")
        wait_for(f"talk on m1 to show {want} through the proxy", lambda: row_state(d, "m1", "talk") == want)
        assert state("m1", "talk") == want
        assert d.js("return window.notReloaded;") == 42, "the page was reloaded"
        d.click("#logout")
        wait_for("the login form under the prefix", lambda: path(d) == "/fleet/login")
        assert proxy.outside == [], f"requests escaped the prefix: {proxy.outside}"
        print("under a proxy's /fleet/ prefix: login, live rows, actions and logout all stayed under it")


if __name__ == "__main__":
    main()
