"""minder_client: a Python client for minder's gRPC API (minder.v1.Supervisor).

    from minder_client import Client, state_name

    with Client("unix:///run/minder.sock") as c:
        for p in c.list_processes():
            print(p.full_name, state_name(p.state))

The gRPC stubs are generated from the repository's proto/ by ``python generate.py`` (next to
this package); they are not committed. ``minder_client.pb`` is the generated message module.
"""

try:
    from ._generated import supervisor_pb2 as pb
    from ._generated import supervisor_pb2_grpc as pb_grpc
except ImportError as e:  # pragma: no cover - what a user sees before generating
    raise ImportError(
        "minder_client's gRPC stubs are missing or stale: run `python generate.py` in "
        f"clients/python (it needs grpcio-tools; see requirements.txt). ({e})"
    ) from e

from .client import (
    ActionError,
    Client,
    Stream,
    health_name,
    result_code_name,
    state_name,
    target,
)

__all__ = [
    "ActionError",
    "Client",
    "Stream",
    "health_name",
    "pb",
    "pb_grpc",
    "result_code_name",
    "state_name",
    "target",
]
