#!/usr/bin/env python3
"""minder-fleet at scale: N minderd nodes (default 200) on this machine, a few real supervisord
4.3.0 nodes and one hung node, in one fleet.

    python3 bench/fleet.py                 # 200 minderd nodes, 2 supervisord, 1 hung (~2 min)
    python3 bench/fleet.py --nodes 50      # smaller
    python3 bench/fleet.py --quick         # 20 nodes, short windows (< 1 min)

Measures, on release binaries (built with cargo unless --bin-dir or --no-build):
- time from the fleet's launch to the first full dashboard (every minderd and supervisord node
  connected with its processes in GET /api/v2/nodes/), and one GET /api/v2/nodes/ after that;
- the fleet's RSS, descriptors and threads, and its CPU time and wake-ups (context switches)
  over an idle window and over a window while every node streams changes (a program on every
  node exits and is restarted each second), against the same fleet with no node: per node;
- "restart group web on every node" across all nodes (POST /api/v2/groups/web/restart): time,
  and each node's result;
- event-to-browser latency: a change made on a node (XML-RPC stopProcess/startProcess over its
  own socket, not through the fleet) until the fleet's server-sent event for it
  (GET /api/fleet/events) is read.

Prints a table and writes bench/results/fleet.json. Standard library only. See
docs/BENCHMARKS.md ("The fleet").
"""

import argparse
import base64
import http.client
import json
import os
import queue
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minderbench import daemons, prepare, procfs  # noqa: E402

ADMIN = ("bench", "fleet-bench-password")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[fleet] {msg}", file=sys.stderr, flush=True)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200, help="minderd nodes (default 200)")
    ap.add_argument("--supervisord", type=int, default=2, help="real supervisord 4.3.0 nodes (default 2)")
    ap.add_argument("--quick", action="store_true", help="20 nodes, 3 s windows")
    ap.add_argument("--window", type=float, default=10.0, help="seconds of each idle/streaming window")
    ap.add_argument("--latency-samples", type=int, default=40)
    ap.add_argument("--bin-dir", help="use minderd, minder and minder-fleet from this directory")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--out", type=Path, default=prepare.BENCH_DIR / "results" / "fleet.json")
    a = ap.parse_args(argv)
    if a.quick:
        a.nodes, a.window, a.latency_samples = min(a.nodes, 20), 3.0, 10
    return a


# -- processes ------------------------------------------------------------------------------


def spawn(argv, cwd, log_path, env=None):
    out = open(log_path, "wb")
    p = daemons.register(subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          env={**os.environ, **(env or {})}))
    out.close()
    return p


def wait_socket(path, popen, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"{popen.args[0]} exited ({popen.returncode}); see {path.parent}")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(str(path))
            return
        except OSError:
            pass
        finally:
            s.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not accept within {timeout} s")
        time.sleep(0.005)


NODE_TOML = """[daemon]
logfile = "{d}/minderd.log"
childlogdir = "{d}"
cgroup = "off"

[program.app]
command = "sleep 1000000"
startsecs = 0

[program.worker]
command = "sleep 1000000"
startsecs = 0

# Started for the streaming window: exits after a second and is restarted, so every node
# sends a few state changes a second.
[program.flap]
command = "sleep 1"
startsecs = 0
autostart = false
autorestart = true

[group.web]
programs = ["app"]
"""

SUPERVISORD_CONF = """[supervisord]
nodaemon=true
silent=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
{user}

[unix_http_server]
file={d}/ctl.sock

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:app]
command=sleep 1000000
startsecs=0

[program:worker]
command=sleep 1000000
startsecs=0

[group:web]
programs=app
"""


def start_minderd(tools, root, i):
    d = root / f"node{i:05d}"
    d.mkdir()
    (d / "minder.toml").write_text(NODE_TOML.format(d=d))
    sock = d / "ctl.sock"
    p = spawn([str(tools.minderd), "-c", str(d / "minder.toml"), "--listen", f"unix://{sock}"], d, d / "out")
    return p, sock


def start_supervisord(supervisord, root, i):
    d = root / f"supervisord{i}"
    d.mkdir()
    user = "user=root" if os.geteuid() == 0 else ""
    (d / "supervisord.conf").write_text(SUPERVISORD_CONF.format(d=d, user=user))
    p = spawn([str(supervisord), "-c", str(d / "supervisord.conf")], d, d / "out")
    return p, d / "ctl.sock"


def hung_node():
    """A TCP listener that accepts and never answers (kept open until the run ends)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(64)
    held = []

    def accept():
        while True:
            try:
                c, _ = lst.accept()
            except OSError:
                return
            held.append(c)

    threading.Thread(target=accept, daemon=True).start()
    return lst.getsockname()[1]


# -- the fleet's HTTP ------------------------------------------------------------------------


def auth_header():
    return "Basic " + base64.b64encode(f"{ADMIN[0]}:{ADMIN[1]}".encode()).decode()


def request(port, method, path, body=None, timeout=120):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": auth_header()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        c.close()


def get_json(port, path):
    status, data = request(port, "GET", path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
    return json.loads(data)


class Events(threading.Thread):
    """An SSE client of /api/fleet/events: every `process` event, with the time it was read."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.q = queue.Queue()
        self.count = 0
        self.error = None
        self.connected = threading.Event()

    def run(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
            c.request("GET", "/api/fleet/events", headers={"Authorization": auth_header(),
                                                             "Accept": "text/event-stream"})
            r = c.getresponse()
            if r.status != 200:
                self.error = f"GET /api/fleet/events: {r.status} {r.read(300)!r}"
                self.connected.set()
                return
            self.connected.set()
            event, data = "message", []
            while True:
                line = r.fp.readline()
                if not line:
                    self.error = "the event stream ended"
                    return
                line = line.decode(errors="replace").rstrip("\r\n")
                if line == "":
                    if data and event == "process":
                        self.count += 1
                        self.q.put((time.monotonic(), json.loads("\n".join(data))))
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
        except Exception as e:  # noqa: BLE001 — reported with the figures
            self.error = f"{type(e).__name__}: {e}"
            self.connected.set()


def xmlrpc(sock, method, *args):
    params = "".join(f"<param><value><string>{a}</string></value></param>" if isinstance(a, str)
                     else f"<param><value><boolean>{int(a)}</boolean></value></param>" for a in args)
    body = (f"<?xml version='1.0'?><methodCall><methodName>{method}</methodName>"
            f"<params>{params}</params></methodCall>").encode()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(sock))
    s.sendall(b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nConnection: close\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    if b" 200 " not in buf.split(b"\r\n", 1)[0] or b"<fault>" in buf:
        raise RuntimeError(f"{method}{args}: {buf[:300]!r}")


# -- measuring the fleet process -----------------------------------------------------------


def sample(pid):
    f = procfs.footprint(pid)
    f["cpu_s"] = procfs.cpu_ticks_seconds(pid)
    f["switches"] = procfs.context_switches(pid)
    return f


def window(pid, seconds):
    a = sample(pid)
    time.sleep(seconds)  # a measuring window, not a synchronisation
    b = sample(pid)
    return {
        "rss_kib": b["rss_kib"],
        "fds": b["fds"],
        "threads": b["threads"],
        "cpu_percent": 100 * (b["cpu_s"] - a["cpu_s"]) / seconds,
        "wakeups_per_s": (b["switches"] - a["switches"]) / seconds,
    }


def start_fleet(tools_fleet, root, conf_text, tag):
    conf = root / f"{tag}.toml"
    conf.write_text(conf_text)
    os.chmod(conf, 0o600)
    port_file = root / f"{tag}.out"
    p = spawn([str(tools_fleet), "--config-file", str(conf), "--host", "127.0.0.1", "--port", "0"],
              root, port_file, env={"MINDER_FLEET_LOG": "info"})
    deadline = time.monotonic() + 30
    while True:
        text = port_file.read_text(errors="replace")
        if "listening at http://" in text:
            port = int(text.split("listening at http://", 1)[1].split()[0].rsplit(":", 1)[1])
            return p, port
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"minder-fleet did not start:\n{text[-2000:]}")
        time.sleep(0.005)


def fleet_conf(nodes):
    head = f'[cesi]\nadmin_username = "{ADMIN[0]}"\nadmin_password = "{ADMIN[1]}"\n\n'
    head += "[fleet]\ncall_timeout = 2\n\n"
    return head + "".join(nodes)


def main(argv=None):
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    daemons.become_subreaper()
    want = a.nodes * 4 + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    minderd, minder = prepare.build_minder(a.bin_dir, build=not (a.no_build or a.bin_dir))
    fleet_bin = minderd.parent / "minder-fleet"
    tools = type("T", (), {"minderd": minderd, "minder": minder})
    supervisord = prepare.supervisor_venv()[0] if a.supervisord else None
    root = Path(tempfile.mkdtemp(prefix="minder-fleet-bench-"))
    results = {"nodes": a.nodes, "supervisord_nodes": a.supervisord, "hung_nodes": 1,
               "machine": {"cores": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}}
    try:
        log(f"starting {a.nodes} minderd nodes in {root}")
        t0 = time.monotonic()
        nodes = [start_minderd(tools, root, i) for i in range(a.nodes)]
        for p, sock in nodes:
            wait_socket(sock, p)
        log(f"  {a.nodes} minderd up in {time.monotonic() - t0:.1f} s")
        svs = []
        if supervisord:
            svs = [start_supervisord(supervisord, root, i) for i in range(a.supervisord)]
            for p, sock in svs:
                wait_socket(sock, p, timeout=60)
        hung = hung_node()
        entries = [f'[[nodes]]\nname = "m{i:05d}"\nenvironment = "env{i % 4}"\nkind = "minderd"\n'
                   f'address = "unix://{sock}"\n\n' for i, (_, sock) in enumerate(nodes)]
        entries += [f'[[nodes]]\nname = "sv{i}"\nenvironment = "legacy"\naddress = "unix://{sock}"\n\n'
                    for i, (_, sock) in enumerate(svs)]
        entries.append(f'[[nodes]]\nname = "hung"\nenvironment = "legacy"\nhost = "127.0.0.1"\nport = {hung}\n\n')

        # The same fleet with no node: what the per-node figures are counted from.
        empty, _ = start_fleet(fleet_bin, root, fleet_conf([]), "empty")
        time.sleep(1)  # let it settle: a measuring pause, nothing waits on it
        base = window(empty.pid, min(3.0, a.window))
        daemons._end(empty, 10)
        results["empty"] = base

        fleet, port = start_fleet(fleet_bin, root, fleet_conf(entries), "fleet")
        launched = time.monotonic()
        expect = a.nodes + len(svs)
        while True:
            v = get_json(port, "/api/v2/nodes/")
            full = sum(1 for n in v["nodes"] if n["general"]["connected"] and len(n["processes"]) >= 2)
            if full >= expect:
                break
            if time.monotonic() - launched > 120:
                raise RuntimeError(f"only {full} of {expect} nodes connected after 120 s")
            time.sleep(0.01)
        results["first_full_dashboard_s"] = time.monotonic() - launched
        log(f"first full dashboard after {results['first_full_dashboard_s']:.3f} s")
        times = []
        for _ in range(10):
            t = time.perf_counter()
            status, body = request(port, "GET", "/api/v2/nodes/")
            times.append(time.perf_counter() - t)
        results["get_nodes_ms"] = statistics.median(times) * 1000
        results["get_nodes_bytes"] = len(body)

        time.sleep(2)
        idle = window(fleet.pid, a.window)
        results["idle"] = idle
        log(f"idle: {idle}")
        # By now the hung node has had its deadline many times over.
        hung_view = get_json(port, "/api/v2/nodes/hung/")["node"]["general"]
        results["hung_node"] = {"connected": hung_view["connected"], "last_error": hung_view.get("last_error")}

        ev = Events(port)
        ev.start()
        ev.connected.wait(10)
        results["sse_error_at_connect"] = ev.error
        t = time.perf_counter()
        status, body = request(port, "POST", "/api/v2/groups/flap/start", body=b"")
        results["group_start_flap_s"] = time.perf_counter() - t
        before = ev.count
        streaming = window(fleet.pid, a.window)
        streaming["process_events_per_s"] = (ev.count - before) / a.window
        results["streaming"] = streaming
        log(f"streaming: {streaming}")
        request(port, "POST", "/api/v2/groups/flap/stop", body=b"")
        time.sleep(1)

        t = time.perf_counter()
        status, body = request(port, "POST", "/api/v2/groups/web/restart", body=b"")
        took = time.perf_counter() - t
        answer = json.loads(body)
        results["group_restart_web"] = {
            "status": status,
            "seconds": took,
            "nodes_succeeded": sum(1 for n in answer.get("nodes", []) if n.get("status") == "success"),
            "failed": answer.get("failed"),
        }
        log(f"restart group web on every node: {took:.3f} s (HTTP {status})")

        # Event-to-browser latency: a change made on a node, until its event is read.
        lat = []
        if ev.error is None:
            while not ev.q.empty():
                ev.q.get_nowait()
            for k in range(a.latency_samples):
                i = ((k // 2) * 37) % a.nodes  # a stop, then a start, on each node
                name = f"m{i:05d}"
                method = "supervisor.stopProcess" if k % 2 == 0 else "supervisor.startProcess"
                t = time.monotonic()
                xmlrpc(nodes[i][1], method, "web:app", False)
                want_state = "STOPPING" if k % 2 == 0 else "STARTING"
                deadline = t + 10
                while time.monotonic() < deadline:
                    try:
                        at, data = ev.q.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    p = data.get("process", {})
                    if data.get("node") == name and p.get("name") == "app" and p.get("statename") in (
                            want_state, "STOPPED" if k % 2 == 0 else "RUNNING"):
                        lat.append((at - t) * 1000)
                        break
                # Let the change finish before the next one (the process must be RUNNING again).
                time.sleep(0.05)
        results["event_to_browser_ms"] = (
            {"n": len(lat), "median": statistics.median(lat), "max": max(lat), "min": min(lat)} if lat else None)
        results["sse_error"] = ev.error
        results["machine"]["loadavg_end"] = os.getloadavg()[0]
        n = a.nodes + len(svs) + 1
        results["per_node"] = {
            "rss_kib_idle": (idle["rss_kib"] - base["rss_kib"]) / n,
            "rss_kib_streaming": (streaming["rss_kib"] - base["rss_kib"]) / n,
            "fds": (idle["fds"] - base["fds"]) / n,
            "idle_wakeups_per_s": (idle["wakeups_per_s"] - base["wakeups_per_s"]) / n,
            "idle_cpu_percent": (idle["cpu_percent"] - base["cpu_percent"]) / n,
        }
        daemons._end(fleet, 10)
    finally:
        daemons.cleanup()
        if not a.keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)
    print(json.dumps(results, indent=2))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
