"""The peers beside minder and supervisord (issue 17): circus, pm2, s6 and runit, each driven
through its own tools the way its users drive it, and made to look like a `daemons.Daemon` to
the scenarios: start with N programs, `ctl("status" | "start", "all" | "stop", "all")`,
`states()`, `child_pids()`, `supervising_pids()` (every process that supervises: s6 and runit
run one per program), `terminate()`; and for the capture and tail -f scenarios,
`output_files(program)` (where its stdout was captured: s6 and runit through a log/ service),
`logger_pids()` (s6-log, svlogd) and `tail_argv(program)` (how its users follow the output).

What a peer cannot do is said, not skipped: `CANNOT[peer][scenario]` is the "n/a: why" cell of
the table. The common ground is deliberately small: a peer's RUNNING is "its child process
exists and has exec'ed" (startsecs = 0 for everyone), counted from /proc, because none of the
peers has supervisord's RUNNING state with a settle time and their status outputs differ.
"""

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

from . import procfs
from .daemons import Daemon, adopt, disown, forget, reap_orphans, register, wait_exit

SLEEP_BIN = "/bin/sleep"

# Scenarios a peer cannot do, and why (the table's cell). Scenarios not listed here and not
# in SUPPORTED are not adapted yet: the table says so as well.
CANNOT = {
    "s6": {
        "xmlrpc": "n/a: Supervisor's XML-RPC is minder's and supervisord's only",
    },
    "runit": {
        "xmlrpc": "n/a: Supervisor's XML-RPC is minder's and supervisord's only",
    },
    "circus": {
        "xmlrpc": "n/a: Supervisor's XML-RPC is minder's and supervisord's only",
    },
    "pm2": {
        "xmlrpc": "n/a: Supervisor's XML-RPC is minder's and supervisord's only",
    },
}
# The scenarios the adapters implement.
SUPPORTED = ("status", "startstop", "footprint", "shutdown", "respawn", "capture", "tailf", "scale")


def cannot(peer, scenario):
    """The "n/a: why" (or "not adapted yet") text of a peer for a scenario, or None if it runs."""
    if scenario in SUPPORTED:
        return None
    if scenario == "spawn":
        return "n/a: minder against the C loop only (each peer's `start all` is in scenario 2)"
    if scenario == "webpage":
        return "n/a: a browser test of minderd's own page"
    return CANNOT.get(peer, {}).get(scenario, "not adapted yet for peers (this scenario runs minder and supervisord only)")


class Peer(Daemon):
    """A peer daemon: the scenarios' interface on top of the peer's own tools."""

    conf_name = "peer.conf"
    # How long the peer may take to be ready to take commands.
    ready_timeout = 60

    def __init__(self, tools, root, programs, tag="", nofile=None, extra_env=None):
        super().__init__(tools, root, programs, tag, nofile, extra_env)
        self.info = (tools.peers or {}).get(self.kind) or {}
        if not self.info.get("bin"):
            raise RuntimeError(f"{self.kind} is not installed: {self.info.get('error')}")
        self.bin = Path(self.info["bin"])

    def count(self):
        return sum(p.numprocs for p in self.programs)

    # -- life ------------------------------------------------------------------------------

    def start(self, ready_timeout=None):
        self.prepare_files()
        out = open(self.dir / "daemon.out", "wb")
        self.started_at = time.monotonic()
        self.popen = register(subprocess.Popen(
            self.daemon_argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=self.dir, env=self.env, start_new_session=True))
        out.close()
        deadline = time.monotonic() + (ready_timeout or self.ready_timeout)
        while not self.ready():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.kind} exited ({self.popen.returncode}):\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} was not ready within {ready_timeout} s:\n{self.output()}")
            time.sleep(0.005)
        self.after_start()
        return self.started_at

    def prepare_files(self):
        self.conf.write_text(self.config_text())

    def after_start(self):
        pass

    def sleeps(self, parents):
        """The live `sleep` children of `parents` (the programs once exec'ed, not a shell or a
        fork that has not exec'ed yet)."""
        return [pid for pid in procfs.children_of(parents) if procfs.comm(pid) == "sleep"]

    def child_pids(self):
        return self.sleeps([self.pid])

    def supervising_pids(self):
        """Every process that supervises (summed in footprint): the daemon, and for s6 and runit
        one supervising process per program."""
        return [self.pid]

    def states(self):
        """{"RUNNING": programs whose process has exec'ed}, counted from /proc."""
        return {"RUNNING": len(self.child_pids())}

    def wait_all_running(self, count, timeout, watcher=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.child_pids()) >= count:
                return time.monotonic()
            if not self.running():
                return None
            time.sleep(0.02)
        return None

    def watcher(self, from_end=True):
        raise RuntimeError(f"{self.kind} has no daemon log the scenarios can read")

    def logger_pids(self):
        """Processes that write the programs' output to files, beside the supervising ones
        (s6-log, svlogd): counted in the capture scenario's CPU."""
        return []

    def output_files(self, program):
        """The files a program's captured stdout went to, oldest first (a logger that rotates
        leaves archives before its current file)."""
        return [Path(program.stdout_logfile)]

    def tail_argv(self, program):
        """How this peer's users follow a program's output: `tail -F` of the file it is
        captured into (pm2 has a command of its own)."""
        return ["tail", "-F", "-n", "0", str(self.output_files(program)[-1])]

    def ctl(self, *args, timeout=600):
        return subprocess.run(self.ctl_argv(*args), capture_output=True, text=True, timeout=timeout,
                              env=self.env, cwd=self.dir)

    def version(self):
        return self.info.get("version")


# -- circus ----------------------------------------------------------------------------------


class Circus(Peer):
    """circusd with one watcher per program (numprocesses = numprocs) in an ini file, on ZeroMQ
    ipc:// endpoints in its temp dir; `circusctl` over that endpoint. Each program's stdout and
    stderr go to a FileStream in the child log directory, as minderd's and supervisord's do."""

    kind = "circus"
    conf_name = "circus.ini"

    def config_text(self):
        lines = [
            "[circus]",
            f"endpoint = ipc://{self.dir}/ctl.sock",
            f"pubsub_endpoint = ipc://{self.dir}/pub.sock",
            "statsd = false",
            # An ini file's default: circusd reaps and respawns on this poll (seconds).
            "check_delay = 5",
            f"logoutput = {self.dir}/circus.log",
            "",
        ]
        for p in self.programs:
            cmd = shlex.split(p.command)
            lines += [
                f"[watcher:{p.name}]",
                f"cmd = {cmd[0] if cmd[0].startswith('/') else '/usr/bin/env ' + cmd[0]}",
                f"args = {shlex.join(cmd[1:])}" if cmd[1:] else "",
                f"numprocesses = {p.numprocs}",
                f"autostart = {'true' if p.autostart else 'false'}",
                f"respawn = {'true' if p.autorestart else 'false'}",
                f"graceful_timeout = {p.stopwaitsecs}",
                "copy_env = true",
                "warmup_delay = 0",
            ]
            if p.stdout_logfile != "NONE":
                for stream in ("stdout", "stderr"):
                    lines += [
                        f"{stream}_stream.class = FileStream",
                        f"{stream}_stream.filename = {self._log(p, stream)}",
                    ]
            lines.append("")
        return "\n".join(lines)

    def _log(self, p, stream):
        if stream == "stdout" and p.stdout_logfile:
            return p.stdout_logfile
        return f"{self.childlogdir}/{p.name}-{stream}.log"

    def output_files(self, program):
        return [Path(self._log(program, "stdout"))]

    def daemon_argv(self):
        return [str(self.bin / "circusd"), str(self.conf)]

    def ready(self):
        return self.ctl("list").returncode == 0 if (self.dir / "ctl.sock").exists() else False

    def ctl_argv(self, *args):
        base = [str(self.bin / "circusctl"), "--endpoint", f"ipc://{self.dir}/ctl.sock", "--timeout", "600"]
        if len(args) == 2 and args[1] == "all":
            # `circusctl start` with no name skips watchers with autostart = false: name each.
            verb = [args[0], "--waiting"] if args[0] == "stop" else [args[0]]
            calls = [shlex.join([*base, verb[0], p.name, *verb[1:]]) for p in self.programs]
            return ["/bin/sh", "-c", " && ".join(calls)] if len(calls) > 1 else shlex.split(calls[0])
        return [*base, *args]

    def terminate(self, grace=30):
        """SIGTERM: circusd stops every watcher (graceful_timeout each), then exits."""
        return super().terminate(grace)


# -- pm2 -------------------------------------------------------------------------------------


class PM2(Peer):
    """pm2 with PM2_HOME in the temp dir (never the user's ~/.pm2), an ecosystem file with one
    app per program (instances = numprocs, fork mode, interpreter none: /bin/sleep itself),
    started by `pm2 start ecosystem.config.js`, which forks pm2's daemon ("God") on first use.
    pm2 has no "defined but not started": autostart = false is a start followed by `pm2 stop
    all`. It always captures output, into PM2_HOME/logs/. `pm2 kill` ends it."""

    kind = "pm2"
    conf_name = "ecosystem.config.js"
    ready_timeout = 120

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.home = self.dir / "pm2home"
        self.env = {**self.env, "PM2_HOME": str(self.home), "PM2_DISCRETE_MODE": "true"}
        self.env.pop("PM2_PUBLIC_KEY", None)
        self.daemon_pid = None

    def config_text(self):
        apps = []
        for p in self.programs:
            cmd = shlex.split(p.command)
            apps.append({
                "name": p.name,
                "script": cmd[0] if cmd[0].startswith("/") else f"/usr/bin/{cmd[0]}",
                "args": cmd[1:],
                "interpreter": "none",
                "exec_mode": "fork",
                "instances": p.numprocs,
                "autorestart": bool(p.autorestart),
                "kill_timeout": p.stopwaitsecs * 1000,
                "out_file": "/dev/null" if p.stdout_logfile == "NONE" else str(self.output_files(p)[0]),
                "error_file": "/dev/null" if p.stdout_logfile == "NONE" else f"{self.childlogdir}/{p.name}-err.log",
            })
            if p.startsecs:
                # pm2's counterpart of startsecs: an exit sooner counts as an unstable restart
                # (and after max_restarts of those, it gives up); its default is 1 s.
                apps[-1]["min_uptime"] = int(p.startsecs * 1000)
        return "module.exports = " + json.dumps({"apps": apps}, indent=1) + ";\n"

    def start(self, ready_timeout=None):
        """`pm2 start ecosystem.config.js`: the CLI starts the daemon and returns once the
        apps are launched. Returns the monotonic time it was run."""
        self.prepare_files()
        self.started_at = time.monotonic()
        timeout = ready_timeout or self.ready_timeout
        try:
            r = self.ctl("start", str(self.conf), timeout=timeout)
        except subprocess.TimeoutExpired:
            r = None
        pidfile = self.home / "pm2.pid"
        if pidfile.exists() and self.daemon_pid is None:  # the daemon runs on even if the CLI failed
            self.daemon_pid = int(pidfile.read_text().strip())
            adopt(self.daemon_pid, lambda: self.terminate())
        if r is None:
            raise RuntimeError(f"`pm2 start` did not return within {timeout} s")
        if r.returncode != 0 or not pidfile.exists():
            raise RuntimeError(f"pm2 start failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
        if not all(p.autostart for p in self.programs):
            self.wait_all_running(self.count(), 120)
            self.ctl("stop", "all")
        return self.started_at

    @property
    def pid(self):
        return self.daemon_pid

    def output_files(self, program):
        if program.stdout_logfile and program.stdout_logfile != "NONE":
            return [Path(program.stdout_logfile)]
        return [self.childlogdir / f"{program.name}-out.log"]

    def tail_argv(self, program):
        """`pm2 logs NAME --raw --lines 0`: pm2's own follower, fed by the daemon's event bus."""
        return [str(self.bin), "logs", program.name, "--raw", "--lines", "0"]

    def running(self):
        return self.daemon_pid is not None and procfs.alive(self.daemon_pid)

    def ctl_argv(self, *args):
        if args == ("status",):
            args = ("ls",)  # its table of every process, as `minder status` prints one
        return [str(self.bin), *args]

    def terminate(self, grace=30):
        """`pm2 kill`: stops every app and the daemon. Returns (seconds, killed)."""
        if not self.running():
            return 0.0, False
        t0 = time.monotonic()
        self.ctl("kill", timeout=grace + 30)
        killed = False
        if procfs.alive(self.daemon_pid):
            try:
                os.kill(self.daemon_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed = True
        took = time.monotonic() - t0
        disown(self.daemon_pid)
        reap_orphans()
        return took, killed

    def signal_shutdown(self):
        """The shutdown scenario's "stop everything": `pm2 kill`, in the background."""
        return register(subprocess.Popen(self.ctl_argv("kill"), stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, env=self.env))


# -- s6 and runit: a scan directory of service directories -----------------------------------


class ServiceDirs(Peer):
    """A scan directory with one service directory per process (`run`: `#!/bin/sh` + `exec`
    the command, the usual form), and `down` in each when autostart = false. Both always
    restart a service that exits, and a long-running program never notices, so autorestart
    = false is ignored unless a scenario whose programs exit sets `run_once`: then it is
    `down` plus a "once" start after the scanner is up (which would otherwise add a command
    per program to the start-up being timed). Without a log/ service the children's output goes to the scanner's
    stdout (daemon.out), uncaptured per program; a program with an explicit stdout_logfile
    gets the log/ service these users write for that (`logger_script`), logging into the
    directory stdout_logfile, with no timestamps (neither adds any unless asked)."""

    # The logger's name in /proc (s6-log, svlogd) and how to ask for "up once".
    logger = None
    once = None
    # Honour autorestart = false (see the class's docstring).
    run_once = False
    # The most service directories one scanner takes (runsvdir: 1000, fixed when it is
    # built), or None. Past it, the services are split into shards, each under a scanner
    # of its own that is itself a service of the top one (`shard_service`), as runit's
    # users nest runsvdir.
    shard_size = None

    def captured(self, p):
        return p.stdout_logfile not in (None, "NONE")

    def prepare_files(self):
        self.scan = self.dir / "scan"
        self.scan.mkdir()
        self.services = []
        self.once_services = []
        total = sum(p.numprocs for p in self.programs)
        self.sharded = bool(self.shard_size) and total > self.shard_size
        self.service_glob = [f"{self.scan}/*"]
        if self.sharded:
            shards = self.dir / "shards"
            count = -(-total // self.shard_size)
            self.service_glob = [f"{shards}/{k:03d}/*" for k in range(count)]
            for k in range(count):
                (shards / f"{k:03d}").mkdir(parents=True)
                self.shard_service(self.scan / f"shard{k:03d}", shards / f"{k:03d}")
        index = 0
        for p in self.programs:
            for i in range(p.numprocs):
                parent = self.dir / "shards" / f"{index // self.shard_size:03d}" if self.sharded else self.scan
                index += 1
                s = parent / (p.name if p.numprocs == 1 else f"{p.name}_{i:05d}")
                s.mkdir()
                run = s / "run"
                run.write_text(f"#!/bin/sh\nexec {p.command}\n")
                run.chmod(0o755)
                once = self.run_once and p.autostart and not p.autorestart
                if not p.autostart or once:
                    (s / "down").touch()
                if once:
                    self.once_services.append(s)
                self.services.append(s)
                if self.captured(p):
                    logdir = Path(p.stdout_logfile)
                    logdir.mkdir(parents=True, exist_ok=True)
                    (s / "log").mkdir()
                    run = s / "log" / "run"
                    run.write_text(f"#!/bin/sh\nexec {self.logger_script(logdir)}\n")
                    run.chmod(0o755)
                    self.services.append(s / "log")

    def after_start(self):
        for s in self.once_services:
            argv = [str(self.bin / self.once[0]), *self.once[1:], str(s)]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise RuntimeError(f"{shlex.join(argv)}: exit {r.returncode}: {r.stderr[:300]}")

    def output_files(self, program):
        """The logger's archives (named @TAI64N timestamp, so sorted by age), then `current`."""
        logdir = Path(program.stdout_logfile)
        return sorted(logdir.glob("@*")) + [logdir / "current"]

    def tail_argv(self, program):
        return ["tail", "-F", "-n", "0", str(Path(program.stdout_logfile) / "current")]

    def all_supervisors(self):
        """The supervising processes under the scanner (for s6, also those of log/ services)."""
        return [pid for pid in procfs.children(self.pid) if procfs.alive(pid)]

    def supervisors(self):
        return self.all_supervisors()

    def logger_pids(self):
        return [p for p in procfs.children_of(self.all_supervisors()) if procfs.comm(p) == self.logger]

    def supervising_pids(self):
        return [self.pid, *self.supervisors()]

    def child_pids(self):
        return self.sleeps(self.supervisors())

    def each(self, *argv):
        """A shell loop running `argv DIR` on every service directory: one process per
        program, as s6-svc and s6-svstat take one directory each."""
        cmd = shlex.join(argv)
        dirs = " ".join(shlex.quote(g[:-1]) + "*" for g in self.service_glob)
        return ["/bin/sh", "-c", f"for d in {dirs}; do {cmd} \"$d\" || exit 1; done"]


class S6(ServiceDirs):
    """s6-svscan over the scan directory (one s6-supervise per program); `s6-svc -u`/`-d` and
    `s6-svstat` take one service directory each, so "all" is a loop over them."""

    kind = "s6"
    logger = "s6-log"
    once = ["s6-svc", "-o"]
    # s6-log's largest current file (it rotates past this); n: how many archives to keep.
    max_file = 268435455

    def logger_script(self, logdir):
        return f"s6-log n100 s{self.max_file} {shlex.quote(str(logdir))}"

    def daemon_argv(self):
        # -c: the most services it will supervise (default 1000), log/ services included.
        return [str(self.bin / "s6-svscan"), "-c", str(max(1000, len(self.services) + 100)), str(self.scan)]

    def ready(self):
        # s6-svscan has started every s6-supervise, and each has opened its control fifo.
        return all((s / "supervise" / "control").exists() for s in self.services)

    def ctl_argv(self, *args):
        if args == ("status",):
            return self.each(str(self.bin / "s6-svstat"))
        if args == ("start", "all"):
            return self.each(str(self.bin / "s6-svc"), "-u")
        if args == ("stop", "all"):
            return self.each(str(self.bin / "s6-svc"), "-d")
        raise ValueError(f"s6: no command for {args}")

    def signal_shutdown(self):
        """`s6-svscanctl -t`: s6-svscan tells every s6-supervise to bring its service down and
        exit, then exits itself."""
        return register(subprocess.Popen([str(self.bin / "s6-svscanctl"), "-t", str(self.scan)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def terminate(self, grace=30):
        if not self.running():
            return 0.0, False
        t0 = time.monotonic()
        p = self.signal_shutdown()
        wait_exit(p, grace)
        forget(p)
        killed = not wait_exit(self.popen, grace)
        if killed:
            self.popen.kill()
            self.popen.wait()
        forget(self.popen)
        reap_orphans()
        return time.monotonic() - t0, killed


class Runit(ServiceDirs):
    """runsvdir over the scan directory (one runsv per program); `sv status|up|down` takes
    every service directory in one call. SIGHUP to runsvdir stops everything: it sends TERM
    to each runsv (which stops its service and exits) and exits. Past runsvdir's 1000
    services, shards of 1000 under nested runsvdir services (`shard_service`)."""

    kind = "runit"
    logger = "svlogd"
    once = ["sv", "once"]
    shard_size = 1000

    def shard_service(self, service, shard):
        """A service running `runsvdir` over `shard`. Stopping it must stop the shard's
        services: runsv sends TERM, on which runsvdir exits and leaves its runsv children
        running; control/t (which runsv runs instead, then sends nothing) sends HUP, on which
        runsvdir TERMs every runsv under it and exits."""
        (service / "control").mkdir(parents=True)
        run = service / "run"
        run.write_text(f"#!/bin/sh\nexec {shlex.quote(str(self.bin / 'runsvdir'))} -P {shlex.quote(str(shard))}\n")
        t = service / "control" / "t"
        t.write_text(f"#!/bin/sh\nexec kill -HUP \"$(cat {shlex.quote(str(service / 'supervise' / 'pid'))})\"\n")
        for f in (run, t):
            f.chmod(0o755)

    def all_supervisors(self):
        """The runsv processes, and when sharded the shards' runsv and runsvdir above them."""
        top = super().all_supervisors()
        if not self.sharded:
            return top
        inner = procfs.children_of(top)
        return top + inner + procfs.children_of(inner)

    def logger_script(self, logdir):
        # svlogd reads its settings from LOGDIR/config: s0 = never rotate.
        (logdir / "config").write_text("s0\n")
        return f"svlogd {shlex.quote(str(logdir))}"

    def daemon_argv(self):
        return [str(self.bin / "runsvdir"), "-P", str(self.scan)]

    def ready(self):
        return all((s / "supervise" / "control").exists() for s in self.services)

    def ctl_argv(self, *args):
        verb = {("status",): "status", ("start", "all"): "up", ("stop", "all"): "down"}.get(args)
        if verb is None:
            raise ValueError(f"runit: no command for {args}")
        dirs = " ".join(shlex.quote(g[:-1]) + "*" for g in self.service_glob)
        return ["/bin/sh", "-c", f"exec {shlex.quote(str(self.bin / 'sv'))} {verb} {dirs}"]

    def signal_shutdown(self):
        os.kill(self.pid, signal.SIGHUP)
        return None

    def terminate(self, grace=30):
        if not self.running():
            return 0.0, False
        t0 = time.monotonic()
        children = self.child_pids()
        self.signal_shutdown()
        killed = not wait_exit(self.popen, grace)
        if killed:
            self.popen.kill()
            self.popen.wait()
        forget(self.popen)
        # runsvdir exits at once; its runsv children finish stopping after it.
        deadline = time.monotonic() + grace
        while any(procfs.alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.01)
        reap_orphans()
        return time.monotonic() - t0, killed


PEERS = {"circus": Circus, "pm2": PM2, "s6": S6, "runit": Runit}
