# Calls the same XML-RPC methods on supervisord and on minderd (both serving the same
# supervisord.conf on unix sockets) and compares what comes back: exact values where they are
# the same by nature (method lists, fault codes and strings, log data, status lists), and the
# shape (keys and types) where values differ (pids, times). Prints each difference; exits 1
# if there is any. Run by tests/e2e/xmlrpc.rs: python3 xmlrpc_compare.py THEIRS.sock OURS.sock
import http.client
import socket
import sys
import time
import xmlrpc.client as x


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


class UnixTransport(x.Transport):
    def __init__(self, path):
        super().__init__()
        self.unix_path = path

    def make_connection(self, host):
        return UnixConnection(self.unix_path)


def proxy(path):
    return x.ServerProxy("http://localhost/RPC2", transport=UnixTransport(path))


def call(p, name, *args):
    f = p
    for part in name.split("."):
        f = getattr(f, part)
    try:
        return f(*args)
    except x.Fault as e:
        return ("FAULT", e.faultCode, e.faultString)


def shape(v):
    if isinstance(v, dict):
        return {k: shape(w) for k, w in v.items()}
    if isinstance(v, list):
        return [shape(w) for w in v]
    return type(v).__name__


# (method, args, compare): "exact" values (dicts compared with their key order), or "shape".
CALLS = [
    ("supervisor.getAPIVersion", (), "exact"),
    ("supervisor.getVersion", (), "exact"),
    ("supervisor.getState", (), "exact"),
    ("supervisor.getPID", (), "shape"),
    ("supervisor.getIdentification", (), "shape"),
    ("supervisor.getSupervisorVersion", (), "shape"),
    ("system.listMethods", (), "exact"),
    ("supervisor.getAllProcessInfo", (), "shape"),
    ("supervisor.getProcessInfo", ("web",), "shape"),
    ("supervisor.getProcessInfo", ("nope",), "exact"),
    ("supervisor.getProcessInfo", ("idle",), "shape"),
    ("supervisor.readProcessStdoutLog", ("talk", 0, 0), "exact"),
    ("supervisor.readProcessStdoutLog", ("talk", -3, 0), "exact"),
    ("supervisor.readProcessStdoutLog", ("talk", -3, 2), "exact"),
    ("supervisor.tailProcessStdoutLog", ("talk", 0, 3), "exact"),
    ("supervisor.tailProcessStdoutLog", ("talk", 0, 100), "exact"),
    ("supervisor.tailProcessStderrLog", ("talk", 0, 100), "exact"),
    ("supervisor.readProcessStdoutLog", ("nope", 0, 0), "exact"),
    ("supervisor.startProcess", ("web",), "exact"),
    ("supervisor.stopProcess", ("idle",), "exact"),
    ("supervisor.startProcess", ("nope",), "exact"),
    ("supervisor.signalProcess", ("web", "NOPE"), "exact"),
    ("supervisor.signalProcess", ("web", "CONT"), "exact"),
    ("supervisor.startProcessGroup", ("idle",), "exact"),
    ("supervisor.getProcessInfo", ("idle",), "shape"),
    ("supervisor.stopProcessGroup", ("idle",), "exact"),
    ("supervisor.signalProcessGroup", ("web", "CONT"), "exact"),
    ("supervisor.startProcess", ("missing",), "exact"),
    ("supervisor.sendProcessStdin", ("idle", "x"), "exact"),
    ("supervisor.sendProcessStdin", ("nope", "x"), "exact"),
    ("supervisor.clearProcessLogs", ("nope",), "exact"),
    ("supervisor.reloadConfig", (), "exact"),
    ("supervisor.addProcessGroup", ("web",), "exact"),
    ("supervisor.removeProcessGroup", ("web",), "exact"),
    ("supervisor.removeProcessGroup", ("nope",), "exact"),
    ("supervisor._dispatch", (), "exact"),
    ("supervisor.getAllConfigInfo", (), "exact"),
    ("system.multicall", ([{"methodName": "supervisor.getAPIVersion", "params": []},
                           {"methodName": "supervisor.getProcessInfo", "params": ["nope"]}],), "exact"),
]

theirs, ours = proxy(sys.argv[1]), proxy(sys.argv[2])
for p in (theirs, ours):
    deadline = time.monotonic() + 10
    while call(p, "supervisor.readProcessStdoutLog", "talk", 0, 0) != "hello\n":
        assert time.monotonic() < deadline, "talk's output never came"
        time.sleep(0.05)

differences = 0
for name, args, how in CALLS:
    t, o = call(theirs, name, *args), call(ours, name, *args)
    if how == "exact":
        same = t == o and repr(t) == repr(o)
    else:
        same = shape(t) == shape(o)
    if not same:
        differences += 1
        print(f"{name}{args}:\n  supervisord: {t!r}\n  minderd:     {o!r}")
print(f"{len(CALLS)} calls, {differences} differences")
sys.exit(1 if differences else 0)
