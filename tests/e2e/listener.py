"""An event listener written against Supervisor's own `supervisor.childutils`, as users write
theirs. It appends every event it gets to a JSON-lines file (headers, payload, its pid) and
answers as its mode says:

    listener.py RECORD ok                  accepts everything
    listener.py RECORD fail-once EVENT     rejects the first EVENT of each serial, then accepts it
    listener.py RECORD hang-once EVENT     never answers the first EVENT it gets (blocks until
                                           it is killed); a restarted one accepts
    listener.py RECORD wait-for FILE       says READY only once FILE exists, then accepts
"""

import json
import os
import sys
import time

from supervisor import childutils

record, mode = sys.argv[1], sys.argv[2]
arg = sys.argv[3] if len(sys.argv) > 3 else None

if mode == "wait-for":
    # Polls for a file the test creates: the listener is not READY meanwhile, so the pool
    # buffers (and overflows).
    while not os.path.exists(arg):
        time.sleep(0.05)

rejected = set()
while True:
    headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
    with open(record, "a") as f:
        f.write(json.dumps({"headers": headers, "payload": payload, "pid": os.getpid()}) + "\n")
    name = headers["eventname"]
    if mode == "fail-once" and name == arg and headers["serial"] not in rejected:
        rejected.add(headers["serial"])
        childutils.listener.fail(sys.stdout)
        continue
    if mode == "hang-once" and name == arg and not os.path.exists(record + ".hung"):
        open(record + ".hung", "w").close()
        while True:
            time.sleep(60)
    childutils.listener.ok(sys.stdout)
