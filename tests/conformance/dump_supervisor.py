#!/usr/bin/env python3
"""Print the effective configuration Supervisor 4.3 reads from a supervisord.conf, as JSON.

Usage: dump_supervisor.py FILE.conf            print the JSON on stdout, exit 0
       dump_supervisor.py --error FILE.conf    expect Supervisor to reject FILE.conf:
                                               print its message, exit 0 (exit 1 if it loads)

The configuration is read by Supervisor's own ServerOptions (realize with -c, nothing started)
and, when the file has a [supervisorctl] section, by its ClientOptions. What the machine
supplies is pinned so the output is portable and minder's test can supply the same:

- the environment is replaced by context.json's "env" (so %(ENV_X)s, ~ and the temp dir
  are fixed);
- the current directory is the corpus directory (relative paths resolve there);
- platform.node() (%(host_node_name)s) returns context.json's "host_node_name";
- the corpus directory is written as @CORPUS@ in every string.

Regenerate the expected files with tests/conformance/regenerate.sh (see README.md).
"""

import json
import os
import platform
import pwd
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = HERE
# What the machine supplies, pinned; tests/conformance.rs reads the same file.
with open(os.path.join(HERE, "context.json")) as f:
    CONTEXT = json.load(f)
HOST = CONTEXT["host_node_name"]
FIXED_ENV = CONTEXT["env"]


def pin_the_machine():
    os.environ.clear()
    os.environ.update(FIXED_ENV)
    os.chdir(CORPUS)
    platform.node = lambda: HOST


class Rejected(Exception):
    pass


def portable(value):
    """Replaces the corpus directory by @CORPUS@ in every string, recursively."""
    if isinstance(value, str):
        return value.replace(CORPUS, "@CORPUS@")
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, tuple):
        return [portable(v) for v in value]
    if isinstance(value, dict):
        return {portable(k): portable(v) for k, v in value.items()}
    return value


def logfile(value):
    from supervisor.datatypes import Automatic
    if value is Automatic:
        return "AUTO"
    return value  # None (NONE/off, or redirected) or a path


def autorestart(value):
    from supervisor.datatypes import RestartUnconditionally, RestartWhenExitUnexpected
    if value is RestartUnconditionally:
        return "true"
    if value is RestartWhenExitUnexpected:
        return "unexpected"
    return "false"


def signame(num):
    for name in dir(signal):
        if name.startswith("SIG") and not name.startswith("SIG_") and getattr(signal, name) == num:
            return name[3:]
    return str(num)


def level_name(num):
    from supervisor.loggers import LevelsByDescription
    for name in ("critical", "error", "warn", "info", "debug", "trace", "blather"):
        if getattr(LevelsByDescription, name) == num:
            return name
    return str(num)


def user_name(uid):
    if uid is None:
        return None
    return pwd.getpwuid(uid).pw_name


def process(p, group):
    out = {
        "name": p.name,
        "group": group,
        "command": p.command,
        "priority": p.priority,
        "autostart": p.autostart,
        "autorestart": autorestart(p.autorestart),
        "startsecs": p.startsecs,
        "startretries": p.startretries,
        "exitcodes": list(p.exitcodes),
        "stopsignal": signame(p.stopsignal),
        "stopwaitsecs": p.stopwaitsecs,
        "stopasgroup": p.stopasgroup,
        "killasgroup": p.killasgroup,
        "uid": p.uid,
        "user": user_name(p.uid),
        "directory": p.directory,
        "umask": p.umask,
        "environment": dict(p.environment or {}),
        "redirect_stderr": p.redirect_stderr,
        "serverurl": p.serverurl,
    }
    for ch in ("stdout", "stderr"):
        out[ch + "_logfile"] = logfile(getattr(p, ch + "_logfile"))
        for k in ("logfile_maxbytes", "logfile_backups", "capture_maxbytes",
                  "events_enabled", "syslog"):
            out["%s_%s" % (ch, k)] = getattr(p, "%s_%s" % (ch, k))
    return out


def group(g):
    from supervisor.options import EventListenerPoolConfig, FastCGIGroupConfig
    out = {
        "name": g.name,
        "priority": g.priority,
        # supervisord starts a group's processes sorted by priority, then name.
        "members": [p.name for p in sorted(g.process_configs)],
        "kind": "programs",
    }
    if isinstance(g, EventListenerPoolConfig):
        from supervisor.events import getEventNameByType
        out["kind"] = "eventlistener"
        out["buffer_size"] = g.buffer_size
        out["events"] = sorted(getEventNameByType(e) for e in g.pool_events)
        h = g.result_handler
        out["result_handler"] = "%s:%s" % (h.__module__, h.__name__)
    elif isinstance(g, FastCGIGroupConfig):
        s = g.socket_config
        out["kind"] = "fcgi-program"
        out["socket"] = s.url
        out["socket_backlog"] = s.backlog
        out["socket_mode"] = getattr(s, "mode", None)
        owner = getattr(s, "owner", None)
        out["socket_owner"] = list(owner) if owner is not None else None
    return out


def server(c):
    import socket
    out = {"username": c["username"], "password": c["password"]}
    if c["family"] == socket.AF_UNIX:
        out.update(family="unix", file=c["file"], chmod=c["chmod"], chown=list(c["chown"]))
    else:
        out.update(family="inet", host=c["host"], port=c["port"])
    return out


def load_server(path):
    from supervisor.options import ServerOptions
    opts = ServerOptions()
    def reject(msg):
        raise Rejected(msg)
    opts.usage = reject
    opts.realize(args=["-c", path])
    s = opts.configroot.supervisord
    return {
        "supervisord": {
            "logfile": opts.logfile,
            "logfile_maxbytes": opts.logfile_maxbytes,
            "logfile_backups": opts.logfile_backups,
            "loglevel": level_name(opts.loglevel),
            "pidfile": opts.pidfile,
            "umask": opts.umask,
            "nodaemon": bool(opts.nodaemon),
            "silent": bool(opts.silent),
            "minfds": opts.minfds,
            "minprocs": opts.minprocs,
            "nocleanup": bool(opts.nocleanup),
            "childlogdir": opts.childlogdir,
            "user": opts.user,
            "directory": opts.directory,
            "strip_ansi": bool(opts.strip_ansi),
            "environment": dict(s.environment),
            "identifier": opts.identifier,
        },
        "servers": [server(c) for c in opts.server_configs],
        "rpcinterfaces": [
            {"name": name, "factory": "%s:%s" % (f.__module__, f.__name__), "options": extras}
            for name, f, extras in opts.rpcinterface_factories
        ],
        "groups": [group(g) for g in opts.process_group_configs],
        "processes": [process(p, g.name) for g in opts.process_group_configs
                      for p in sorted(g.process_configs)],
        "warnings": list(opts.parse_warnings),
    }


def load_client(path):
    from supervisor.options import ClientOptions, UnhosedConfigParser
    # supervisorctl refuses a file without [supervisorctl]; the dump reports null instead.
    parser = UnhosedConfigParser()
    parser.read(path)
    if not parser.has_section("supervisorctl"):
        return None
    opts = ClientOptions()
    def reject(msg):
        raise Rejected(msg)
    opts.usage = reject
    opts.realize(args=["-c", path, "status"])
    return {
        "serverurl": opts.serverurl,
        "username": opts.username,
        "password": opts.password,
        "prompt": opts.prompt,
        "history_file": opts.history_file,
    }


def main(argv):
    expect_error = argv[1:2] == ["--error"]
    args = argv[2:] if expect_error else argv[1:]
    if len(args) != 1:
        sys.stderr.write(__doc__)
        return 2
    path = os.path.abspath(args[0])
    pin_the_machine()
    try:
        result = load_server(path)
        result["supervisorctl"] = load_client(path)
    except (Rejected, ValueError) as e:
        if expect_error:
            print(portable(str(e)))
            return 0
        sys.stderr.write("supervisord rejects %s: %s\n" % (path, e))
        return 1
    if expect_error:
        sys.stderr.write("supervisord accepts %s, which was expected to be rejected\n" % path)
        return 1
    from supervisor.options import VERSION
    result["supervisor_version"] = VERSION
    json.dump(portable(result), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
