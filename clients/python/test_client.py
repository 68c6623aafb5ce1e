"""End-to-end tests of minder_client against a real minderd.

Each test starts its own minderd (the binary from MINDERD_BIN, else ../../target/debug/minderd)
with a configuration in a temp dir, on a unix socket there, and ends it (only it, by its pid)
afterwards. Tests poll for conditions up to deadlines; they never sleep to synchronise.

    python -m unittest -v test_client       # after `python generate.py`; run-tests does both
"""

import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import grpc

from minder_client import ActionError, Client, pb, state_name

HERE = pathlib.Path(__file__).resolve().parent
# How long anything that should happen at once may take on a slow, busy machine.
DEADLINE = 20.0


def minderd_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("MINDERD_BIN") or HERE.parent.parent / "target" / "debug" / "minderd")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: build the workspace first (cargo build --workspace) or set MINDERD_BIN"
        )
    return path


def wait_for(what, cond, timeout=DEADLINE):
    """Polls ``cond`` until it returns something true, and returns that; fails after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Daemon:
    """A minderd of our own in a temp dir; ``{dir}`` in the configuration is that dir, where
    ``files`` ({name: text}) are written before minderd starts."""

    def __init__(self, toml: str, files=None, args=()):
        self.tmp = tempfile.TemporaryDirectory(prefix="minder-py-")
        self.dir = pathlib.Path(self.tmp.name)
        for name, text in (files or {}).items():
            (self.dir / name).write_text(text)
        self.config = self.dir / "minder.toml"
        self.config.write_text(toml.replace("{dir}", str(self.dir)))
        self.socket = self.dir / "minder.sock"
        self.log = self.dir / "minderd.log"
        self.address = f"unix://{self.socket}"
        env = dict(os.environ, TMPDIR=str(self.dir))
        env.pop("MINDER_SERVER", None)
        self.proc = subprocess.Popen(
            [minderd_bin(), "-c", self.config, "--listen", self.address, "-l", self.log, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.client = None
        try:
            # Connect once the socket is there: a gRPC channel that finds nothing backs off for
            # a second or more before it tries again.
            wait_for("minderd to bind its socket", lambda: self._alive() and self.socket.exists())
            self.client = Client(self.address, timeout=DEADLINE)
            wait_for("minderd to answer", self._answers)
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"minderd exited during start-up with {self.proc.returncode}: {self.proc.stderr.read().decode()}"
            )
        return True

    def _answers(self) -> bool:
        self._alive()
        try:
            return self.client.daemon_info().pid == self.proc.pid
        except grpc.RpcError:
            return False

    def tcp_address(self) -> str:
        """The TCP address minderd reports listening at (it was given port 0)."""

        def find():
            for line in self.log.read_text().splitlines() if self.log.exists() else ():
                if "listening at tcp://" in line:
                    return line.split("listening at ", 1)[1].strip()
            return None

        return wait_for("the TCP listener", find)

    def state(self, name: str) -> str:
        return state_name(self.client.get_process(name).state)

    def wait_state(self, name: str, state: str) -> None:
        wait_for(f"{name} to be {state}", lambda: self.state(name) == state)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc.poll() is None:
            # Only the daemon this test started, by its pid.
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("minderd did not stop within 30 s of SIGTERM")
        self.proc.stderr.close()
        self.tmp.cleanup()


def make_pki(dir: pathlib.Path) -> None:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made with
    the openssl command line (run-tests makes sure it is there)."""

    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=minder test CA")
    (dir / "ext").write_text(
        "[server]\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "[client]\nbasicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n"
    )
    for name in ("server", "client"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "ext",
                "-extensions", name)


ADMIN_TOKEN = "admin-token-0123456789"
READER_TOKEN = "reader-token-0123456789"


class ClientTest(unittest.TestCase):
    def daemon(self, toml: str, files=None, args=()) -> Daemon:
        d = Daemon(toml, files, args)
        self.addCleanup(d.stop)
        return d

    def test_lists_starts_and_stops(self):
        d = self.daemon(
            '[program.web]\ncommand = "sleep 100"\nstartsecs = 0\n\n'
            '[program.idle]\ncommand = "sleep 100"\nstartsecs = 0\nautostart = false\n'
        )
        c = d.client
        d.wait_state("web", "RUNNING")
        procs = {p.full_name: p for p in c.list_processes()}
        self.assertEqual(sorted(procs), ["idle", "web"])
        self.assertEqual(state_name(procs["idle"].state), "STOPPED")
        self.assertEqual(procs["idle"].pid, 0)
        self.assertGreater(procs["web"].pid, 0)
        resp = c.list_processes_response("web", "nope")
        self.assertEqual([p.full_name for p in resp.processes], ["web"])
        self.assertEqual(list(resp.unmatched), ["nope"])

        [started] = c.start("idle")
        self.assertEqual(started.code, pb.RESULT_CODE_SUCCESS)
        self.assertEqual(state_name(started.process.state), "RUNNING")
        self.assertEqual(d.state("idle"), "RUNNING")
        self.assertGreater(c.get_process("idle").pid, 0)

        [stopped] = c.stop("idle")
        self.assertEqual(stopped.code, pb.RESULT_CODE_SUCCESS)
        self.assertEqual(d.state("idle"), "STOPPED")
        self.assertEqual(c.get_process("idle").pid, 0)
        self.assertEqual(d.state("web"), "RUNNING")

        # Stopping it again is NOT_RUNNING: an ActionError, or a result with check=False.
        with self.assertRaisesRegex(ActionError, "NOT_RUNNING"):
            c.stop("idle")
        [again] = c.stop("idle", check=False)
        self.assertEqual(again.code, pb.RESULT_CODE_NOT_RUNNING)
        with self.assertRaises(grpc.RpcError) as e:
            c.get_process("nope")
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_tail_log_is_byte_exact(self):
        # It prints known lines (one not UTF-8), then echoes its stdin, so the test decides
        # when more output comes instead of waiting for it.
        printed = b"first line\nsecond line \xff\xfe not utf-8\n"
        d = self.daemon(
            '[program.echo]\ncommand = "sh {dir}/echo.sh"\nstartsecs = 0\nautorestart = false\n',
            files={"echo.sh": "printf 'first line\\nsecond line \\377\\376 not utf-8\\n'\nexec cat\n"},
        )
        d.wait_state("echo", "RUNNING")
        c = d.client
        # Without follow: whatever is there, then the stream ends.
        wait_for(
            "the printed lines to reach the log",
            lambda: b"".join(ch.data for ch in c.tail_log("echo", offset=0, timeout=DEADLINE)) == printed,
        )

        sent = [b"third line\n", b"\x00\x01 binary \x80\n", b"no newline at the end"]
        expected = printed + b"".join(sent)
        got = b""
        n_sent = 0
        with c.tail_log("echo", offset=0, follow=True, timeout=DEADLINE) as stream:
            for chunk in stream:
                self.assertEqual(chunk.process, "echo")
                self.assertEqual(chunk.channel, pb.LOG_CHANNEL_STDOUT)
                self.assertEqual(chunk.offset, len(got), "chunks are contiguous")
                self.assertEqual(chunk.skipped, 0)
                got += chunk.data
                self.assertTrue(expected.startswith(got), f"{got!r} is not a prefix of {expected!r}")
                # Send the next piece only once everything before it has been read back.
                if n_sent < len(sent) and got == printed + b"".join(sent[:n_sent]):
                    c.send_stdin("echo", sent[n_sent])
                    n_sent += 1
                if got == expected:
                    break
        self.assertEqual(got, expected)

        # The last 2 lines, from the end.
        tail = b"".join(ch.data for ch in c.tail_log("echo", last_lines=2, timeout=DEADLINE))
        self.assertEqual(tail, b"\x00\x01 binary \x80\nno newline at the end")

    def test_watch_events_snapshot_then_restart(self):
        d = self.daemon('[program.web]\ncommand = "sleep 100"\nstartsecs = 0\n')
        c = d.client
        d.wait_state("web", "RUNNING")
        with c.watch_events(timeout=DEADLINE) as events:
            first = next(events)
            self.assertEqual(first.WhichOneof("kind"), "snapshot")
            self.assertTrue(first.instance)
            self.assertEqual(first.snapshot.daemon_state, pb.DAEMON_STATE_RUNNING)
            [web] = first.snapshot.processes
            self.assertEqual((web.full_name, state_name(web.state)), ("web", "RUNNING"))
            old_pid = web.pid

            c.restart("web")
            want = [("RUNNING", "STOPPING"), ("STOPPING", "STOPPED"), ("STOPPED", "STARTING"), ("STARTING", "RUNNING")]
            seen = []
            for i, (frm, to) in enumerate(want, start=1):
                e = next(events)
                self.assertEqual(e.WhichOneof("kind"), "process", e)
                self.assertEqual(e.seq, first.seq + i, "consecutive sequence numbers")
                self.assertEqual(e.instance, first.instance)
                self.assertEqual(e.process.full_name, "web")
                seen.append((state_name(getattr(e.process, "from")), state_name(e.process.to)))
            self.assertEqual(seen, want)
        new_pid = c.get_process("web").pid
        self.assertNotIn(new_pid, (0, old_pid))

        # Resuming after the snapshot's number replays exactly those changes, with no snapshot.
        with c.watch_events(since_seq=first.seq, instance=first.instance, timeout=DEADLINE) as again:
            replay = [next(again) for _ in want]
        self.assertEqual([e.seq for e in replay], [first.seq + i for i in range(1, len(want) + 1)])
        self.assertEqual({e.WhichOneof("kind") for e in replay}, {"process"})

    def test_health_follows_stop_and_start(self):
        d = self.daemon('[program.web]\ncommand = "sleep 100"\nstartsecs = 0\nautorestart = false\n')
        c = d.client
        d.wait_state("web", "RUNNING")
        self.assertEqual(c.check_health(""), "SERVING")
        with c.watch_health("web", timeout=DEADLINE) as health:
            self.assertEqual(next(health), "SERVING")
            c.stop("web")
            self.assertEqual(next(health), "NOT_SERVING")
            c.start("web")
            self.assertEqual(next(health), "SERVING")
        with self.assertRaises(grpc.RpcError) as e:
            c.check_health("nope")
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_tokens_over_tcp(self):
        d = self.daemon(
            '[daemon]\ntokens_file = "{dir}/tokens"\n'
            '[program.web]\ncommand = "sleep 100"\nstartsecs = 0\n',
            files={"tokens": f"ops admin {ADMIN_TOKEN}\ngrafana read-only {READER_TOKEN}\n"},
            args=["--listen", "tcp://127.0.0.1:0"],
        )
        d.wait_state("web", "RUNNING")
        addr = d.tcp_address()
        with Client(addr, token=ADMIN_TOKEN, timeout=DEADLINE) as admin:
            self.assertEqual(admin.daemon_info().pid, d.proc.pid)
            results = admin.restart("web")  # the stop's result, then the start's
            self.assertEqual([r.code for r in results], [pb.RESULT_CODE_SUCCESS] * 2)
            # Streams carry the token too.
            with admin.watch_events(timeout=DEADLINE) as events:
                self.assertEqual(next(events).WhichOneof("kind"), "snapshot")
        with Client(addr, token=READER_TOKEN, timeout=DEADLINE) as reader:
            self.assertEqual([p.full_name for p in reader.list_processes()], ["web"])
            with self.assertRaises(grpc.RpcError) as e:
                reader.stop("web")
            self.assertEqual(e.exception.code(), grpc.StatusCode.PERMISSION_DENIED)
        for who in (Client(addr, timeout=DEADLINE), Client(addr, token="wrong-token", timeout=DEADLINE)):
            with who, self.assertRaises(grpc.RpcError) as e:
                who.list_processes()
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_username_and_password_over_tcp(self):
        # supervisord's [inet_http_server] credentials, the password stored as a SHA-1 hash.
        # supervisord refuses port 0 here, so the test finds a free port.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        d = self.daemon(
            f'[inet_http_server]\nport = "127.0.0.1:{port}"\nusername = "user"\n'
            'password = "{SHA}82ab876d1387bfafe46cc1c8a2ef074eae50cb1d"\n'
            '[program.web]\ncommand = "sleep 100"\nstartsecs = 0\n',
            # --listen replaces the configuration's addresses; the credentials stay with theirs.
            args=["--listen", f"tcp://127.0.0.1:{port}"],
        )
        addr = d.tcp_address()
        self.assertEqual(addr, f"tcp://127.0.0.1:{port}")
        with Client(addr, username="user", password="thepassword", timeout=DEADLINE) as c:
            self.assertEqual(c.daemon_info().pid, d.proc.pid)
        with Client(addr, username="user", password="wrong", timeout=DEADLINE) as c:
            with self.assertRaises(grpc.RpcError) as e:
                c.daemon_info()
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        with self.assertRaisesRegex(ValueError, "go together"):
            Client(addr, username="user")

    def test_mutual_tls(self):
        pki = pathlib.Path(self.enterContext(tempfile.TemporaryDirectory(prefix="minder-pki-")))
        make_pki(pki)
        d = self.daemon(
            f'[daemon]\ntls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n'
            f'tls_client_ca = "{pki}/ca.pem"\ntokens_file = "{{dir}}/tokens"\n',
            files={"tokens": f"ops admin {ADMIN_TOKEN}\n"},
            args=["--listen", "tcp://127.0.0.1:0"],
        )
        addr = d.tcp_address()
        with Client(addr, tls_ca=pki / "ca.pem", tls_cert=pki / "client.pem", tls_key=pki / "client.key",
                    timeout=DEADLINE) as c:
            self.assertEqual(c.daemon_info().pid, d.proc.pid)
        # The CA given as bytes, a token instead of a certificate, and the name to check.
        with Client(addr, tls_ca=(pki / "ca.pem").read_bytes(), tls_domain="localhost", token=ADMIN_TOKEN,
                    timeout=DEADLINE) as c:
            with self.assertRaises(grpc.RpcError) as e:
                c.daemon_info()
            # Without a client certificate the handshake itself is refused.
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
        with Client(addr, timeout=DEADLINE) as plain:
            with self.assertRaises(grpc.RpcError) as e:
                plain.daemon_info()
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    unittest.main()
