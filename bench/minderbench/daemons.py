"""The two supervisors under test, driven the same way: write a configuration for a list of
programs, start the daemon in its own temp directory on its own unix socket, run its command
line, read its log, stop it.

Every process the benchmark starts is registered here, and `cleanup()` ends them by pid. The
benchmark is a child subreaper, so whatever a daemon leaves behind (its children, if it had to
be killed) is re-parented to the benchmark and is ended here too, by pid.
"""

import ctypes
import json
import os
import re
import resource
import select
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from . import procfs

PR_SET_CHILD_SUBREAPER = 36

# Every process this benchmark started and has not yet seen end.
_started = {}
# Daemons that detach from the command that started them (pm2's): {pid: how to stop it}.
# Re-parented to us, they are not orphans to kill while they run.
_detached = {}


def adopt(pid, stop):
    """Registers a daemon that detached (not our Popen): `stop()` ends it at clean-up."""
    _detached[pid] = stop


def disown(pid):
    _detached.pop(pid, None)


def become_subreaper():
    """Orphaned descendants (a killed daemon's children) are re-parented to us, not init, so
    cleanup can find and end them."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def register(popen):
    _started[popen.pid] = popen
    return popen


def forget(popen):
    _started.pop(popen.pid, None)


def wait_exit(popen, timeout):
    """Waits until `popen` has exited, at most `timeout` s; True if it has (and is reaped).
    A pidfd wakes us the moment it exits: Popen.wait(timeout) polls, with sleeps of up to
    50 ms, which would be added to the shutdown being measured."""
    if popen.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(popen.pid)
    except (AttributeError, OSError):
        try:
            popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    if not ready:
        return False
    popen.wait()
    return True


def _end(popen, grace):
    if popen.poll() is not None:
        return
    try:
        popen.send_signal(signal.SIGTERM)
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()
    except ProcessLookupError:
        pass


def reap_orphans():
    """Ends and reaps descendants re-parented to us that we did not start directly (children
    of a daemon that died or was killed). Never touches a process we are still waiting on."""
    me = os.getpid()
    for pid in procfs.children(me):
        if pid in _started or pid in _detached:
            continue
        if procfs.alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass


def cleanup(grace=30):
    """Ends every process the benchmark started (daemons first get SIGTERM and `grace`
    seconds to stop their children), then whatever they left behind."""
    for pid, stop in list(_detached.items()):
        try:
            stop()
        except Exception as e:  # clean-up goes on: the rest still need stopping
            print(f"[bench] stopping {pid}: {e}", flush=True)
        disown(pid)
    for popen in list(_started.values()):
        _end(popen, grace)
        forget(popen)
    reap_orphans()


@dataclass
class Program:
    """A program section, the same for both daemons."""

    name: str
    command: str
    numprocs: int = 1
    startsecs: float = 0
    # supervisord takes whole seconds only (fractions are a minder extension).
    sv_startsecs: int = None
    autostart: bool = True
    autorestart: object = False  # True, False or "unexpected"
    startretries: int = 3
    stdout_logfile: str = None  # None: AUTO
    stdout_logfile_maxbytes: int = None  # None: the default (50MB)
    redirect_stderr: bool = False
    stopwaitsecs: int = 10

    def process_names(self):
        if self.numprocs == 1:
            return [self.name]
        return [f"{self.name}:{self.name}_{i:05d}" for i in range(self.numprocs)]

    def options(self, kind):
        """(key, value) pairs with Python values, in supervisord's option names."""
        startsecs = self.startsecs
        if kind == "supervisord":
            startsecs = self.sv_startsecs if self.sv_startsecs is not None else int(self.startsecs)
        opts = [("command", self.command)]
        if self.numprocs != 1:
            opts += [("numprocs", self.numprocs), ("process_name", "%(program_name)s_%(process_num)05d")]
        opts += [
            ("startsecs", startsecs),
            ("autostart", self.autostart),
            ("autorestart", self.autorestart),
            ("startretries", self.startretries),
            ("stopwaitsecs", self.stopwaitsecs),
        ]
        if self.stdout_logfile is not None:
            opts.append(("stdout_logfile", self.stdout_logfile))
        if self.redirect_stderr:
            opts.append(("redirect_stderr", True))
        if self.stdout_logfile_maxbytes is not None:
            opts.append(("stdout_logfile_maxbytes", self.stdout_logfile_maxbytes))
        return opts


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(line):
    """The epoch time of a daemon log line (`2026-11-24 05:07:01,123 INFO ...`; local time, as
    both daemons write it), or None."""
    m = _LOG_TIME.match(line)
    if not m:
        return None
    t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    return t + int(m.group(2)) / 1000


class LogWatcher:
    """Reads a daemon's log as it grows, counting lines that contain a string."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = 0
        self.partial = b""

    def skip_to_end(self):
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            self.offset = 0
        self.partial = b""

    def new_lines(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        return [l.decode("utf-8", "replace") for l in lines]

    def wait_count(self, needle, count, timeout, on_line=None, poll=0.01, alive=None):
        """Waits until `count` new lines containing `needle` have appeared. Returns the
        monotonic time it saw the last one, or None after `timeout` seconds (or once `alive()`
        turns false)."""
        seen = 0
        self.last_at = None  # when the last matching line was seen
        deadline = time.monotonic() + timeout
        while True:
            for line in self.new_lines():
                if on_line:
                    on_line(line)
                if needle in line:
                    seen += 1
                    self.last_at = time.monotonic()
                    if seen >= count:
                        return self.last_at
            if time.monotonic() > deadline or (alive and not alive()):
                self.seen = seen
                return None
            time.sleep(poll)


class Daemon:
    """One supervisor daemon in its own directory, on its own socket."""

    kind = None

    def __init__(self, tools, root, programs, tag="", nofile=None, extra_env=None):
        self.tools = tools
        self.programs = programs
        self.dir = Path(root) / f"{self.kind}{('-' + tag) if tag else ''}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.childlogdir = self.dir / "childlogs"
        self.childlogdir.mkdir()
        self.sock = self.dir / "ctl.sock"
        self.log_path = self.dir / f"{self.kind}.log"
        self.conf = self.dir / self.conf_name
        self.nofile = nofile
        self.popen = None
        self.started_at = None
        self.env = {**os.environ, **(extra_env or {})}

    # -- life ------------------------------------------------------------------------------

    def start(self, ready_timeout=60):
        """Starts the daemon and waits until its socket accepts connections. Returns the
        monotonic time it was launched."""
        self.conf.write_text(self.config_text())
        out = open(self.dir / "daemon.out", "wb")
        nofile = self.nofile

        def limits():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.started_at = time.monotonic()
        self.popen = register(
            subprocess.Popen(
                self.daemon_argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches the benchmark, which stops us in order
                preexec_fn=limits if nofile else None,
            )
        )
        out.close()
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.kind} exited ({self.popen.returncode}):\n{self.output()}")
            if self.sock.exists():
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(str(self.sock))
                    break
                except OSError:
                    pass
                finally:
                    s.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} did not listen within {ready_timeout}s:\n{self.output()}")
            time.sleep(0.005)
        return self.started_at

    def output(self):
        try:
            return (self.dir / "daemon.out").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    @property
    def pid(self):
        return self.popen.pid

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def terminate(self, grace=30):
        """SIGTERM (both daemons then stop every child), SIGKILL after `grace` seconds. Returns
        (seconds until the daemon had exited, whether it had to be killed)."""
        if not self.running():
            return 0.0, False
        t0 = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        killed = False
        if not wait_exit(self.popen, grace):
            self.popen.kill()
            self.popen.wait()
            killed = True
        took = time.monotonic() - t0
        forget(self.popen)
        reap_orphans()
        return took, killed

    # -- the command line ----------------------------------------------------------------

    def ctl(self, *args, timeout=600):
        return subprocess.run(
            self.ctl_argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env
        )

    def watcher(self, from_end=True):
        w = LogWatcher(self.log_path)
        if from_end:
            w.skip_to_end()
        return w

    def child_pids(self):
        return procfs.children(self.pid)

    def supervising_pids(self):
        """Every process of the supervisor itself (footprint counts them all, as for the peers)."""
        return [self.pid]

    def wait_all_running(self, count, timeout, watcher=None):
        """Waits until `count` processes have logged `success: ... entered RUNNING state`."""
        w = watcher or self.watcher(from_end=False)
        return w.wait_count("entered RUNNING state", count, timeout, alive=self.running)

    def names(self):
        return [n for p in self.programs for n in p.process_names()]


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a TOML basic string


def _ini(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class Minder(Daemon):
    kind = "minder"
    conf_name = "minder.toml"

    def config_text(self):
        lines = [
            "[daemon]",
            f"childlogdir = {_toml(self.childlogdir)}",
            f"logfile = {_toml(self.log_path)}",
            "",
        ]
        for p in self.programs:
            lines.append(f"[program.{p.name}]")
            lines += [f"{k} = {_toml(v)}" for k, v in p.options(self.kind)]
            lines.append("")
        return "\n".join(lines)

    def daemon_argv(self):
        return [str(self.tools.minderd), "-c", str(self.conf), "--listen", f"unix://{self.sock}"]

    def ctl_argv(self, *args):
        return [str(self.tools.minder), "-s", f"unix://{self.sock}", *args]

    def child_pids(self):
        """The programs' processes: minderd also forks a helper of its own (the sentinel that
        outlives it to stop the children if it is killed), which is not a program and does
        not stop with `stop all`."""
        return [p for p in procfs.children(self.pid) if not (procfs.comm(p) or "").startswith("minderd")]

    def supervising_pids(self):
        """minderd and its sentinel."""
        return [self.pid, *(p for p in procfs.children(self.pid) if (procfs.comm(p) or "").startswith("minderd"))]

    def states(self):
        """{state: count} from `minder --json status`."""
        r = self.ctl("--json", "status")
        out = {}
        try:
            for p in json.loads(r.stdout)["processes"]:
                out[p["state"]] = out.get(p["state"], 0) + 1
        except (ValueError, KeyError):
            out["?"] = r.returncode
        return out


class Supervisord(Daemon):
    kind = "supervisord"
    conf_name = "supervisord.conf"

    def config_text(self):
        lines = [
            "[supervisord]",
            "nodaemon=true",
            "silent=true",  # log to the file only, as minderd does here
            f"logfile={self.log_path}",
            f"pidfile={self.dir / 'supervisord.pid'}",
            f"childlogdir={self.childlogdir}",
            "user=root" if os.geteuid() == 0 else "",
            "",
            "[unix_http_server]",
            f"file={self.sock}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{self.sock}",
            "",
        ]
        for p in self.programs:
            lines.append(f"[program:{p.name}]")
            lines += [f"{k}={_ini(v)}" for k, v in p.options(self.kind)]
            lines.append("")
        return "\n".join(lines)

    def daemon_argv(self):
        return [str(self.tools.supervisord), "-c", str(self.conf)]

    def ctl_argv(self, *args):
        return [str(self.tools.supervisorctl), "-c", str(self.conf), *args]

    def states(self):
        """{state: count} from `supervisorctl status`."""
        r = self.ctl("status")
        out = {}
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isupper():
                out[parts[1]] = out.get(parts[1], 0) + 1
        return out


KINDS = {"minder": Minder, "supervisord": Supervisord}
