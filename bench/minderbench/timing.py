"""Wall time of whole command-line processes: hyperfine when installed, else posix_spawn +
waitpid from here (both time fork, exec, the run and the exit; output goes to /dev/null)."""

import json
import os
import shlex
import subprocess
import tempfile
import time


def time_command(argv, runs, warmup, hyperfine="", env=None):
    """Seconds taken by each of `runs` runs of `argv`, after `warmup` untimed runs."""
    if hyperfine:
        return _hyperfine(argv, runs, warmup, hyperfine, env)
    return _spawn(argv, runs, warmup, env)


def _hyperfine(argv, runs, warmup, hyperfine, env):
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run(
            [
                hyperfine,
                "-N",  # no shell: time the command itself
                "-i",  # exit codes are checked separately, before timing
                "--style", "none",
                "--warmup", str(warmup),
                "--runs", str(runs),
                "--export-json", out.name,
                "--", shlex.join(str(a) for a in argv),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        return json.load(open(out.name))["results"][0]["times"]


def _spawn(argv, runs, warmup, env):
    argv = [str(a) for a in argv]
    env = env if env is not None else dict(os.environ)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
    ]
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
        os.waitpid(pid, 0)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def timed(argv, timeout=600, env=None):
    """Runs `argv` once; returns (seconds, CompletedProcess)."""
    t0 = time.monotonic()
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env)
    return time.monotonic() - t0, r
