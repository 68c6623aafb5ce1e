# Drives minderd's /RPC2 with Python's own xmlrpc.client, as Supervisor's clients do, and
# checks every method's answer: shapes, types, faults, authentication and roles.
# Run by tests/e2e/xmlrpc.rs: python3 xmlrpc_client.py PORT SOCKET CONFIG DAEMON_PID DAEMON_LOG
import http.client
import os
import re
import socket
import sys
import time
import xmlrpc.client as x

port, sock_path, config_path, daemon_pid, daemon_log = sys.argv[1:6]
daemon_pid = int(daemon_pid)
ADMIN = ("u", "p")
READER_TOKEN = sys.argv[6]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.unix_path)
        self.sock = s


class UnixTransport(x.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        return UnixConnection(self.unix_path)


class BearerTransport(x.Transport):
    def __init__(self, token):
        super().__init__()
        self.token = token

    def send_headers(self, connection, headers):
        connection.putheader("Authorization", "Bearer " + self.token)
        super().send_headers(connection, headers)


def tcp(user=None, password=None):
    auth = f"{user}:{password}@" if user is not None else ""
    return x.ServerProxy(f"http://{auth}127.0.0.1:{port}/RPC2")


s = tcp(*ADMIN)
sup = s.supervisor


def fault(f, *args):
    try:
        f(*args)
    except x.Fault as e:
        return (e.faultCode, e.faultString)
    raise AssertionError(f"no fault from {f}{args}")


def protocol_error(f, *args):
    try:
        f(*args)
    except x.ProtocolError as e:
        return e
    raise AssertionError(f"no protocol error from {f}{args}")


def wait(what, cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# Identity and state.
assert sup.getAPIVersion() == "3.0"
assert sup.getVersion() == "3.0"
assert isinstance(sup.getSupervisorVersion(), str)
assert isinstance(sup.getIdentification(), str)
assert sup.getPID() == daemon_pid, sup.getPID()
assert sup.getState() == {"statecode": 1, "statename": "RUNNING"}, sup.getState()

# ProcessInfo: every key, typed as supervisord types them, sorted by group then name.
KEYS = {"name", "group", "description", "start", "stop", "now", "state", "statename", "spawnerr",
        "exitstatus", "logfile", "stdout_logfile", "stderr_logfile", "pid"}
INTS = {"start", "stop", "now", "state", "exitstatus", "pid"}
wait("web RUNNING", lambda: sup.getProcessInfo("web")["statename"] == "RUNNING")
infos = sup.getAllProcessInfo()
assert isinstance(infos, list) and infos
for i in infos:
    assert set(i) == KEYS, sorted(i)
    for k in INTS:
        assert type(i[k]) is int, (k, i[k])
    for k in KEYS - INTS:
        assert type(i[k]) is str, (k, i[k])
    assert i["logfile"] == i["stdout_logfile"]
assert [(i["group"], i["name"]) for i in infos] == sorted((i["group"], i["name"]) for i in infos)
web = sup.getProcessInfo("web")
assert set(web) == KEYS
assert web["state"] == 20 and web["pid"] > 0, web
assert re.fullmatch(r"pid \d+, uptime \d+:\d\d:\d\d", web["description"]), web["description"]
idle = sup.getProcessInfo("idle")
assert idle["statename"] == "STOPPED" and idle["description"] == "Not started" and idle["pid"] == 0, idle
assert sup.getProcessInfo("idle:idle")["name"] == "idle"

# A program inside minderd reaches it from its environment, as childutils.getRPCInterface does.
wait("probe's report", lambda: "probe" in sup.readProcessStdoutLog("probe", 0, 0))
report = sup.readProcessStdoutLog("probe", 0, 0)
m = re.search(r"probe url unix://(\S+) pid (\d+) me (\d+) enabled 1 group probe", report)
assert m, report
assert m.group(1) == sock_path and m.group(2) == m.group(3), report

# Faults, code and string exactly as Supervisor's.
assert fault(sup.getProcessInfo, "nope") == (10, "BAD_NAME: nope")
assert fault(sup.stopProcess, "idle") == (70, "NOT_RUNNING: idle")
assert fault(sup.startProcess, "web") == (60, "ALREADY_STARTED: web")
assert fault(sup.startProcessGroup, "nope") == (10, "BAD_NAME: nope")
assert fault(sup.signalProcess, "web", "NOPE") == (11, "BAD_SIGNAL: NOPE")
assert fault(sup.getPID, "extra")[0] == 2  # INCORRECT_PARAMETERS
# Only namespace.method without a leading underscore is dispatched (CVE-2017-11610).
assert fault(getattr(sup, "_dispatch")) == (1, "UNKNOWN_METHOD")
assert fault(s.a.b.c) == (1, "UNKNOWN_METHOD")
assert fault(sup.supervisord.options.warnings.linecache.os.system, "id") == (1, "UNKNOWN_METHOD")
assert fault(s.supervisor.noSuchMethod) == (1, "UNKNOWN_METHOD")

# Start and stop, with parameters sent as strings (supervisord-monitor's way).
assert sup.startProcess("idle", "1") is True
assert sup.getProcessInfo("idle")["statename"] == "RUNNING"
assert sup.stopProcess("idle", "1") is True
assert sup.getProcessInfo("idle")["statename"] == "STOPPED"
started = sup.startProcessGroup("idle")
assert started == [{"name": "idle", "group": "idle", "status": 80, "description": "OK"}], started
stopped = sup.stopProcessGroup("idle", True)
assert stopped == [{"name": "idle", "group": "idle", "status": 80, "description": "OK"}], stopped
assert sup.startProcess("idle", False) is True
wait("idle RUNNING", lambda: sup.getProcessInfo("idle")["statename"] == "RUNNING")
assert sup.stopProcess("idle") is True

# Signals.
assert sup.signalProcess("web", "CONT") is True
assert sup.signalProcess("web", 18) is True
assert fault(sup.signalProcess, "idle", "CONT") == (70, "NOT_RUNNING: idle")
res = sup.signalProcessGroup("web", "CONT")
assert res == [{"name": "web", "group": "web", "status": 80, "description": "OK"}], res
res = sup.signalAllProcesses("CONT")
assert isinstance(res, list) and all(r["status"] == 80 for r in res), res

# Logs: read, tail, clear.
wait("talk's output", lambda: sup.readProcessStdoutLog("talk", 0, 0) == "hello\n")
assert sup.readProcessLog("talk", 0, 0) == "hello\n"
assert sup.readProcessStdoutLog("talk", 1, 3) == "ell"
assert sup.readProcessStdoutLog("talk", "-3", "0") == "lo\n"
assert fault(sup.readProcessStdoutLog, "talk", -3, 2) == (3, "BAD_ARGUMENTS")
assert sup.tailProcessStdoutLog("talk", 0, 3) == ["lo\n", 6, True]
assert sup.tailProcessLog("talk", 0, 100) == ["hello\n", 6, False]
assert sup.tailProcessStdoutLog("talk", 6, 100) == ["", 6, False]
assert sup.readProcessStderrLog("talk", 0, 0) == "oops\n"
assert sup.tailProcessStderrLog("talk", 0, 100) == ["oops\n", 5, False]
assert fault(sup.readProcessStdoutLog, "nope", 0, 0) == (10, "BAD_NAME: nope")
assert sup.clearProcessLogs("talk") is True
assert sup.readProcessStdoutLog("talk", 0, 0) == ""
assert sup.clearProcessLog("talk") is True
res = sup.clearAllProcessLogs()
assert isinstance(res, list) and all(set(r) == {"name", "group", "status", "description"} for r in res), res
main = sup.readLog(0, 0)
assert "minderd" in main, main[:200]
assert sup.readMainLog(-10, 0) == main[-10:] or len(sup.readMainLog(-10, 0)) == 10

# stdin.
assert sup.sendProcessStdin("cat", "ping\n") is True
wait("cat's echo", lambda: "ping" in sup.readProcessStdoutLog("cat", 0, 0))
assert fault(sup.sendProcessStdin, "idle", "x") == (70, "NOT_RUNNING: idle")

# Configuration.
conf = sup.getAllConfigInfo()
assert {c["name"] for c in conf} >= {"web", "idle", "talk", "cat", "probe"}, conf
for c in conf:
    assert type(c["inuse"]) is bool and type(c["autostart"]) is bool, c
    assert type(c["process_prio"]) is int and type(c["group_prio"]) is int, c
assert sup.reloadConfig() == [[[], [], []]]
with open(config_path, "a") as f:
    f.write('\n[program.extra]\ncommand = "sleep 100"\nstartsecs = 0\n')
assert sup.reloadConfig() == [[["extra"], [], []]]
assert sup.addProcessGroup("extra") is True
assert fault(sup.addProcessGroup, "extra") == (90, "ALREADY_ADDED: extra")
wait("extra RUNNING", lambda: sup.getProcessInfo("extra")["statename"] == "RUNNING")
assert fault(sup.removeProcessGroup, "extra") == (91, "STILL_RUNNING: extra")
assert sup.stopProcessGroup("extra")[0]["status"] == 80
assert sup.removeProcessGroup("extra") is True
assert fault(sup.getProcessInfo, "extra") == (10, "BAD_NAME: extra")
assert fault(sup.removeProcessGroup, "nope")[0] == 10

# system.*
methods = s.system.listMethods()
assert len(methods) == 41 and "system.multicall" in methods and "supervisor.tailProcessLog" in methods, methods
assert isinstance(s.system.methodHelp("supervisor.getState"), str)
sig = s.system.methodSignature("supervisor.startProcess")
assert isinstance(sig, list) and isinstance(sig[0], list), sig
results = s.system.multicall([
    {"methodName": "supervisor.getPID", "params": []},
    {"methodName": "supervisor._dispatch", "params": []},
    {"methodName": "supervisor.stopProcess", "params": ["idle"]},
    {"methodName": "system.multicall", "params": [[]]},
])
assert results[0] == daemon_pid, results
assert results[1] == {"faultCode": 1, "faultString": "UNKNOWN_METHOD"}, results
assert results[2] == {"faultCode": 70, "faultString": "NOT_RUNNING: idle"}, results
assert results[3]["faultCode"] == 2, results
assert sup.sendRemoteCommEvent("type", "data") is True

# Authentication: none or wrong → 401 asking for Basic; a read-only token reads, cannot change.
e = protocol_error(tcp().supervisor.getState)
headers = {k.lower(): v for k, v in dict(e.headers).items()}
assert e.errcode == 401 and headers.get("www-authenticate") == 'Basic realm="default"', (e.errcode, headers)
assert protocol_error(tcp("u", "wrong").supervisor.getState).errcode == 401
reader = x.ServerProxy(f"http://127.0.0.1:{port}/RPC2", transport=BearerTransport(READER_TOKEN))
assert isinstance(reader.supervisor.getAllProcessInfo(), list)
assert reader.supervisor.tailProcessStdoutLog("talk", 0, 10)[1] >= 0
assert protocol_error(reader.supervisor.stopProcess, "web").errcode == 403
refused = reader.system.multicall([{"methodName": "supervisor.stopProcess", "params": ["web"]}])
assert refused[0]["faultCode"] == 30 and "read-only" in refused[0]["faultString"], refused
assert sup.getProcessInfo("web")["statename"] == "RUNNING"

# The unix socket, no password: the same interface.
local = x.ServerProxy("http://localhost/RPC2", transport=UnixTransport(sock_path))
assert local.supervisor.getState()["statename"] == "RUNNING"
assert local.supervisor.getProcessInfo("web")["pid"] == sup.getProcessInfo("web")["pid"]

# The audit log names the caller of every change.
with open(daemon_log) as f:
    log = f.read()
assert 'user u requested supervisor.stopProcess("idle", "1") over XML-RPC' in log, log[-2000:]
assert "supervisor.sendProcessStdin(\"cat\", (5 bytes)) over XML-RPC" in log, log[-2000:]
assert sup.clearLog() is True
assert "spawned" not in sup.readLog(0, 0)

# restart: everything stops and starts again; then shutdown.
def pid_of(name):
    try:
        return sup.getProcessInfo(name)["pid"]
    except x.Fault:
        return 0  # between its removal and its return


old = pid_of("web")
assert sup.restart() is True
wait("web restarted", lambda: pid_of("web") not in (0, old), timeout=20)
assert sup.getState()["statename"] == "RUNNING"
assert sup.shutdown() is True
print("OK")
