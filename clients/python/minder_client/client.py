"""A thin, synchronous wrapper around minder's gRPC API (service minder.v1.Supervisor).

Every call maps to one RPC and returns the generated protobuf messages unchanged
(``minder_client.pb``), so everything proto/minder/v1/supervisor.proto documents applies.
What the wrapper adds: addresses spelled as minder spells them, keyword arguments instead of
request messages, action results checked like ``subprocess.run(check=True)``, and streams
that can be cancelled and used in a ``with`` block.
"""

from __future__ import annotations

import base64
import collections
import os
from typing import Iterable, Iterator, Optional, Sequence, TypeVar, Union

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._generated import supervisor_pb2 as pb
from ._generated import supervisor_pb2_grpc as pb_grpc

T = TypeVar("T")
PathOrBytes = Union[str, bytes, "os.PathLike[str]"]


def _pem(value: Optional[PathOrBytes]) -> Optional[bytes]:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    with open(value, "rb") as f:
        return f.read()


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _Authorization(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the ``authorization`` header to every call."""

    def __init__(self, value: str):
        self._value = value

    def _details(self, d):
        metadata = [m for m in (d.metadata or ()) if m[0] != "authorization"]
        metadata.append(("authorization", self._value))
        return _CallDetails(
            d.method, d.timeout, metadata, d.credentials,
            getattr(d, "wait_for_ready", None), getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def target(address: str) -> str:
    """The gRPC target for a minder address.

    ``unix:///run/minder.sock`` and ``/run/minder.sock`` are unix sockets; ``tcp://host:port``,
    ``http://host:port`` and ``host:port`` are TCP.
    """
    if address.startswith("unix://"):
        path = address[len("unix://") :]
        if not path.startswith("/"):
            raise ValueError(f"{address!r}: a unix address needs an absolute path (unix:///path)")
        return "unix://" + path
    if address.startswith("/"):
        return "unix://" + address
    for scheme in ("tcp://", "http://"):
        if address.startswith(scheme):
            return address[len(scheme) :].rstrip("/")
    if ":" not in address:
        raise ValueError(f"{address!r}: expected unix:///path, tcp://host:port or host:port")
    return address


def state_name(state: int) -> str:
    """``pb.PROCESS_STATE_RUNNING`` -> ``"RUNNING"``, as supervisorctl prints states."""
    return pb.ProcessState.Name(state).removeprefix("PROCESS_STATE_")


def result_code_name(code: int) -> str:
    """``pb.RESULT_CODE_SUCCESS`` -> ``"SUCCESS"``."""
    return pb.ResultCode.Name(code).removeprefix("RESULT_CODE_")


def health_name(status: int) -> str:
    """A ``grpc.health.v1`` status as a name: ``"SERVING"``, ``"NOT_SERVING"``, ..."""
    return health_pb2.HealthCheckResponse.ServingStatus.Name(status)


class ActionError(Exception):
    """A start, stop, restart or signal did not succeed for every process it named.

    ``results`` holds every ``pb.ProcessResult``, the successful ones too.
    """

    def __init__(self, action: str, results: Sequence[pb.ProcessResult]):
        self.results = list(results)
        failed = [r for r in self.results if r.code != pb.RESULT_CODE_SUCCESS]
        why = "; ".join(f"{r.full_name}: {result_code_name(r.code)} ({r.message})" for r in failed)
        super().__init__(f"{action} failed: {why}")


class Stream(Iterator[T]):
    """A server stream: iterate it for messages; ``cancel()`` (or leaving a ``with`` block)
    ends it. Iteration raises ``grpc.RpcError`` if the call fails, or with
    ``DEADLINE_EXCEEDED`` when the ``timeout`` given to the call runs out."""

    def __init__(self, call):
        self._call = call

    def __iter__(self) -> "Stream[T]":
        return self

    def __next__(self) -> T:
        return next(self._call)

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> "Stream[T]":
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()


def _names(names: Iterable[str]) -> list:
    # A lone string is one selector, not a sequence of one-letter selectors.
    return [names] if isinstance(names, str) else list(names)


class Client:
    """A connection to one minderd.

    >>> with Client("unix:///run/minder.sock") as c:
    ...     for p in c.list_processes():
    ...         print(p.full_name, state_name(p.state), p.description)
    >>> Client("tcp://10.0.0.5:9001", token="...", tls_ca="ca.pem")
    >>> Client("tcp://127.0.0.1:9001", username="admin", password="...")

    ``timeout`` (seconds) is the default deadline of unary calls; streams have none unless
    given one.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: Optional[float] = 30.0,
        token: Optional[str] = None,
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls_ca: Optional[PathOrBytes] = None,
        tls_cert: Optional[PathOrBytes] = None,
        tls_key: Optional[PathOrBytes] = None,
        tls: Optional[bool] = None,
        tls_domain: Optional[str] = None,
        options=(),
    ):
        """``token`` (a bearer token from minderd's ``tokens_file``) or ``username`` and
        ``password`` (supervisord's ``[inet_http_server]`` credentials) authenticate the caller.
        TLS is used for TCP addresses when ``tls`` is true or any ``tls_*`` is given:
        ``tls_ca`` is the CA that signed minderd's certificate (default: the system's roots),
        ``tls_cert`` and ``tls_key`` a client certificate for mutual TLS. Each ``tls_*`` is a
        path or the PEM bytes themselves; ``tls_domain`` is the name to check minderd's
        certificate against, when it is not the address's host."""
        if token is not None and (username is not None or password is not None):
            raise ValueError("give either token or username and password, not both")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.address = address
        self.timeout = timeout
        t = target(address)
        unix = t.startswith("unix:")
        use_tls = bool(tls) or any(x is not None for x in (tls_ca, tls_cert, tls_key, tls_domain))
        if unix and use_tls:
            raise ValueError(f"{address!r}: TLS is for TCP addresses; a unix socket is protected by its mode")
        options = list(options)
        if unix and not any(k == "grpc.default_authority" for k, _ in options):
            # gRPC C-core sends the socket's path, percent-encoded, as :authority
            # ("tmp%2Fm.sock"), which minderd's HTTP/2 stack (hyper/h2) rejects with a
            # PROTOCOL_ERROR reset. Go's grpc and tonic send "localhost"; so do we.
            options.append(("grpc.default_authority", "localhost"))
        if tls_domain is not None:
            options.append(("grpc.ssl_target_name_override", tls_domain))
        if use_tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_pem(tls_ca),
                private_key=_pem(tls_key),
                certificate_chain=_pem(tls_cert),
            )
            channel = grpc.secure_channel(t, creds, options=options)
        else:
            channel = grpc.insecure_channel(t, options=options)
        header = None
        if token is not None:
            header = "Bearer " + token
        elif username is not None:
            pair = f"{username}:{password}".encode()
            header = "Basic " + base64.b64encode(pair).decode("ascii")
        if header is not None:
            # Metadata on every call, not call credentials: gRPC refuses call credentials on
            # an insecure channel, and a loopback TCP listener with a password is one.
            channel = grpc.intercept_channel(channel, _Authorization(header))
        self.channel = channel
        self.stub = pb_grpc.SupervisorStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wait_ready(self, timeout: float) -> None:
        """Waits until the daemon accepts connections (raises ``grpc.FutureTimeoutError``)."""
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    # -- the daemon --------------------------------------------------------------------------

    def daemon_info(self) -> pb.DaemonInfo:
        return self.stub.GetDaemonInfo(pb.GetDaemonInfoRequest(), timeout=self.timeout)

    def shutdown(self) -> None:
        """Asks minderd to stop every process and exit; returns once the shutdown has begun."""
        self.stub.Shutdown(pb.ShutdownRequest(), timeout=self.timeout)

    # -- processes ---------------------------------------------------------------------------

    def list_processes(self, *names: str) -> list:
        """Every process (or those the selectors name), as ``pb.ProcessInfo``, sorted by group
        then name. Selectors that name nothing are ignored; use ``list_processes_response``
        to see them."""
        return list(self.list_processes_response(*names).processes)

    def list_processes_response(self, *names: str) -> pb.ListProcessesResponse:
        return self.stub.ListProcesses(pb.ListProcessesRequest(names=names), timeout=self.timeout)

    def get_process(self, name: str) -> pb.ProcessInfo:
        """One process by "NAME" or "GROUP:NAME" (``grpc.RpcError`` NOT_FOUND if none)."""
        return self.stub.GetProcess(pb.GetProcessRequest(name=name), timeout=self.timeout)

    def _act(self, action: str, response: pb.ProcessActionResponse, check: bool) -> list:
        if check and any(r.code != pb.RESULT_CODE_SUCCESS for r in response.results):
            raise ActionError(action, response.results)
        return list(response.results)

    def start(self, *names: str, wait: bool = True, check: bool = True) -> list:
        """Starts processes; with ``wait``, returns once each is RUNNING or has failed.
        Returns the ``pb.ProcessResult`` list; raises ``ActionError`` if any did not succeed
        (ALREADY_STARTED included) unless ``check=False``."""
        req = pb.StartProcessesRequest(names=names, no_wait=not wait)
        return self._act("start", self.stub.StartProcesses(req, timeout=self.timeout), check)

    def stop(self, *names: str, wait: bool = True, check: bool = True) -> list:
        """Stops processes; with ``wait``, returns once each has exited."""
        req = pb.StopProcessesRequest(names=names, no_wait=not wait)
        return self._act("stop", self.stub.StopProcesses(req, timeout=self.timeout), check)

    def restart(self, *names: str, wait: bool = True, check: bool = True) -> list:
        """Stops, then starts, processes (the stops' results first)."""
        req = pb.RestartProcessesRequest(names=names, no_wait=not wait)
        return self._act("restart", self.stub.RestartProcesses(req, timeout=self.timeout), check)

    def signal(self, signal: str, *names: str, check: bool = True) -> list:
        """Sends ``signal`` ("HUP", "SIGUSR1", "1") to processes without changing their state."""
        req = pb.SignalProcessesRequest(names=names, signal=str(signal))
        return self._act("signal", self.stub.SignalProcesses(req, timeout=self.timeout), check)

    def send_stdin(self, name: str, data: bytes) -> None:
        """Writes ``data`` to a running process's stdin."""
        self.stub.SendStdin(pb.SendStdinRequest(name=name, data=data), timeout=self.timeout)

    # -- logs --------------------------------------------------------------------------------

    def tail_log(
        self,
        names,
        *,
        channels: Sequence[int] = (),
        offset: Optional[int] = None,
        last_bytes: Optional[int] = None,
        last_lines: Optional[int] = None,
        follow: bool = False,
        resume: Sequence[pb.ResumePoint] = (),
        timeout: Optional[float] = None,
    ) -> Stream:
        """A stream of ``pb.LogChunk`` from processes' logs (``names``: a selector or several).

        Start at ``offset``, or the ``last_bytes``/``last_lines``; by default the last 1600
        bytes. With ``follow``, new output keeps coming until ``cancel()``. ``channels``:
        ``pb.LOG_CHANNEL_STDOUT`` and/or ``pb.LOG_CHANNEL_STDERR`` (default: both). Each chunk
        carries its ``offset``: resume with ``pb.ResumePoint(process=..., channel=...,
        offset=chunk.offset + len(chunk.data))``.
        """
        starts = {"offset": offset, "last_bytes": last_bytes, "last_lines": last_lines}
        given = {k: v for k, v in starts.items() if v is not None}
        if len(given) > 1:
            raise ValueError(f"give at most one of offset, last_bytes, last_lines (got {sorted(given)})")
        req = pb.TailLogRequest(
            names=_names(names), channels=channels, follow=follow, resume=resume, **given
        )
        return Stream(self.stub.TailLog(req, timeout=timeout))

    def tail_daemon_log(self, *, follow: bool = False, timeout: Optional[float] = None) -> Stream:
        """minderd's own log (supervisorctl's maintail), as ``pb.LogChunk``."""
        req = pb.TailDaemonLogRequest(follow=follow)
        return Stream(self.stub.TailDaemonLog(req, timeout=timeout))

    # -- events ------------------------------------------------------------------------------

    def watch_events(
        self, *, since_seq: int = 0, instance: str = "", timeout: Optional[float] = None
    ) -> Stream:
        """A stream of ``pb.Event``: a snapshot of every process first, then each change with
        consecutive ``seq``. ``event.WhichOneof("kind")`` is "snapshot", "process", "daemon",
        "group" or "lagged". To resume, pass the last ``seq`` and ``instance`` seen."""
        req = pb.WatchEventsRequest(since_seq=since_seq, instance=instance)
        return Stream(self.stub.WatchEvents(req, timeout=timeout))

    # -- health (grpc.health.v1) -------------------------------------------------------------

    def check_health(self, service: str = "") -> str:
        """The health of the daemon (``""``) or of a process (its full name): "SERVING" while
        it is RUNNING, else "NOT_SERVING". ``grpc.RpcError`` NOT_FOUND for an unknown name."""
        req = health_pb2.HealthCheckRequest(service=service)
        return health_name(self.health_stub.Check(req, timeout=self.timeout).status)

    def watch_health(self, service: str = "", *, timeout: Optional[float] = None) -> Stream:
        """A stream of status names ("SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"): the current
        one first, then each change."""
        req = health_pb2.HealthCheckRequest(service=service)
        return _HealthStream(self.health_stub.Watch(req, timeout=timeout))


class _HealthStream(Stream[str]):
    def __next__(self) -> str:
        return health_name(next(self._call).status)
