#!/usr/bin/env python3
"""Lists minderd's processes, then follows one process's log (as `minder tail -f`).

    python generate.py                                      # once: the gRPC stubs
    python example.py unix:///run/minder.sock               # follows the first process
    python example.py unix:///tmp/minder-1000/minder.sock web
    python example.py tcp://127.0.0.1:9001 site:web_01

Ctrl-C stops following.
"""

import sys

import grpc

from minder_client import Client, pb, state_name


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        return run(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    except grpc.RpcError as e:
        # NOT_FOUND for a process that does not exist, UNAVAILABLE when no minderd answers, ...
        print(f"example.py: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1


def run(address: str, name) -> int:
    with Client(address) as client:
        processes = client.list_processes()
        for p in processes:
            print(f"{p.full_name:<24} {state_name(p.state):<9} {p.description}")
        if not processes:
            print("no processes", file=sys.stderr)
            return 1
        name = name or processes[0].full_name
        print(f"==> following {name}'s stdout (last 10 lines first); Ctrl-C to stop", file=sys.stderr)
        out = sys.stdout.buffer
        with client.tail_log(name, channels=[pb.LOG_CHANNEL_STDOUT], last_lines=10, follow=True) as chunks:
            try:
                for chunk in chunks:
                    # Raw bytes, as the program wrote them: a log need not be UTF-8.
                    out.write(chunk.data)
                    out.flush()
            except KeyboardInterrupt:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
