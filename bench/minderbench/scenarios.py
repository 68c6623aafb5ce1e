"""The scenarios. Each runs minder and supervisord on the same work, one after the other (or
interleaved, repetition by repetition), and returns its raw figures and the rows of the table.

Conventions: every duration is measured by this process with a monotonic clock unless it says
otherwise; cross-process times (a line written by a child, read by a CLI) use CLOCK_REALTIME on
both sides. Figures are summarised as median and spread (min/max, p25/p75)."""

import hashlib
from pathlib import Path
import os
import pty
import resource
import select
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import tty

from . import procfs
from .daemons import KINDS, Program, forget, log_time, reap_orphans, register, wait_exit
from .peers import PEERS
from .stats import one, summary
from .timing import time_command, timed

SLEEP = "sleep 1000000"
MIB = 1024 * 1024
GIB = 1024 * MIB


def raise_nofile(want):
    """Raises this process's descriptor limit (inherited by the daemons it starts) to `want`,
    or as far as it may: raising the hard limit needs CAP_SYS_RESOURCE, which a container may
    lack. Returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Ctx:
    def __init__(self, tools, root, quick, kinds, log, peers=()):
        self.tools = tools
        self.root = root
        self.quick = quick
        self.kinds = kinds
        self.log = log
        # The peers (circus, pm2, s6, runit) asked for and installed; see peers.py.
        self.peers = list(peers)

    def p(self, full, quick):
        """A parameter: its full-run value, or its --quick one."""
        return quick if self.quick else full

    def daemon(self, kind, programs, **kw):
        if kind in PEERS:
            kw.pop("nofile", None)
            return PEERS[kind](self.tools, self.root, programs, **kw)
        return KINDS[kind](self.tools, self.root, programs, **kw)


# -- table rows ------------------------------------------------------------------------------


def row(scenario, metric, unit, minder, other, *, better="lower",
        ratio_from="median", target=None, check=None, note=None, peers=None):
    """One line of the results table. `minder` and `other` are summaries (or None). The ratio is
    other/minder when lower is better (how many times faster or smaller minder is), and
    minder/other when higher is better. `check(minder, other, ratio)` says if the target is met.
    `peers` is {peer: summary, or the text of an "n/a: why" cell}; each peer's ratio to minder
    is computed the same way as supervisord's."""
    ratio = _ratio(minder, other, better, ratio_from)
    met = None
    if check is not None and minder is not None:
        try:
            met = bool(check(minder, other, ratio))
        except TypeError:  # a figure the check needs is missing
            met = None
    return {
        "scenario": scenario,
        "metric": metric,
        "unit": unit,
        "minder": minder,
        "supervisord": other,
        "better": better,
        "ratio_from": ratio_from,
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
        "peers": {k: _peer_cell(v, minder, better, ratio_from) for k, v in (peers or {}).items()},
    }


def _ratio(minder, other, better, ratio_from):
    """other/minder when lower is better, minder/other when higher is; None without both."""
    if not (minder and other and ratio_from):
        return None
    m, o = minder[ratio_from], other[ratio_from]
    if better == "lower" and m:
        return o / m
    if better == "higher" and o:
        return m / o
    return None


def _peer_cell(v, minder, better, ratio_from):
    """{"summary": ..., "ratio": ...} for a figure, {"na": why} for a scenario it cannot do."""
    if isinstance(v, str):
        return {"na": v}
    return {"summary": v, "ratio": _ratio(minder, v, better, ratio_from)}


def scaled(s, factor):
    """A summary with every figure multiplied by `factor` (seconds to ms, KiB to MiB)."""
    if s is None:
        return None
    return {k: (v * factor if k != "n" and v is not None else v) for k, v in s.items()}


def wait_until(cond, timeout, poll=0.002):
    """Polls `cond()` until true; returns the monotonic time it was first seen true, or None."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > deadline:
            return None
        time.sleep(poll)


def settle(daemons, quiet_ms=1.0, window=0.3, limit=5.0):
    """Waits until every daemon in `daemons` has used less than `quiet_ms` of CPU over
    `window` seconds (at most `limit` s), so that one daemon's leftover work (supervisord
    finishes a stop on its next 1 s tick) does not land in the other's measurement."""
    deadline = time.monotonic() + limit
    pids = [d.pid for d in daemons if d.running()]
    before = sum(procfs.cpu_ns(p) or 0 for p in pids)
    while time.monotonic() < deadline:
        time.sleep(window)
        after = sum(procfs.cpu_ns(p) or 0 for p in pids)
        if after - before < quiet_ms * 1e6:
            return
        before = after


def all_gone(pids):
    return not any(procfs.alive(p) for p in pids)


def run_peers(ctx, scenario, fn):
    """Runs `fn(peer)` for each peer; a peer that fails gives a "failed: ..." cell instead of
    losing the scenario (the others' figures stand). Returns {peer: result or str}."""
    out = {}
    for peer in ctx.peers:
        try:
            out[peer] = fn(peer)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            ctx.log(f"{scenario} {peer}: FAILED: {type(e).__name__}: {e}")
            out[peer] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        finally:
            from .daemons import cleanup
            cleanup()
    return out


def peer_cells(results, get):
    """{peer: get(result)} for peers that ran, the failure text for those that did not."""
    return {k: (v if isinstance(v, str) else get(v)) for k, v in results.items()}


# -- 1. CLI round trip ---------------------------------------------------------------------


def status(ctx):
    """`status` with 10 programs running: wall time of the whole CLI process."""
    n = 10
    runs = {"minder": ctx.p(300, 20), "supervisord": ctx.p(40, 3)}
    progs = [Program("p", SLEEP, numprocs=n)]
    res = {"params": {"programs": n, "runs": runs, "tool": "hyperfine" if ctx.tools.hyperfine else "posix_spawn"}}
    for kind in ctx.kinds:
        d = ctx.daemon(kind, progs)
        d.start()
        if d.wait_all_running(n, 60) is None:
            raise RuntimeError(f"{kind}: not all {n} programs RUNNING")
        r = d.ctl("status")
        states = d.states()
        settle([d])
        times = time_command(d.ctl_argv("status"), runs[kind], 3, ctx.tools.hyperfine, d.env)
        res[kind] = {"exit_code": r.returncode, "states": states, "times_s": times, "summary": summary(times)}
        if kind == "minder":
            # The floor: one gRPC round trip of an empty request (GetDaemonInfo), same socket,
            # same CLI process start.
            floor = time_command(d.ctl_argv("version"), runs[kind], 3, ctx.tools.hyperfine, d.env)
            res["floor"] = {"argv": d.ctl_argv("version"), "times_s": floor, "summary": summary(floor)}
        d.terminate()
        ctx.log(f"status {kind}: median {res[kind]['summary']['median'] * 1000:.2f} ms")
    def peer(kind):
        d = ctx.daemon(kind, progs)
        d.start()
        if d.wait_all_running(n, 60) is None:
            raise RuntimeError(f"{kind}: not all {n} programs running")
        r = d.ctl("status")
        if r.returncode != 0:
            raise RuntimeError(f"{kind} status: exit {r.returncode}: {r.stderr[:300]}")
        settle([d])
        times = time_command(d.ctl_argv("status"), runs["supervisord"], 3, ctx.tools.hyperfine, d.env)
        d.terminate()
        out = {"argv": d.ctl_argv("status"), "times_s": times, "summary": summary(times)}
        ctx.log(f"status {kind}: median {out['summary']['median'] * 1000:.2f} ms")
        return out

    res["peers"] = run_peers(ctx, "status", peer)
    m, s = (scaled(res.get(k, {}).get("summary"), 1000) for k in ("minder", "supervisord"))
    res["rows"] = [
        row("1 CLI round trip", "`status`, 10 programs (wall time of the CLI process)", "ms", m, s,
            target="≥ 20× faster", check=lambda m, o, r: r >= 20,
            peers=peer_cells(res["peers"], lambda v: scaled(v["summary"], 1000))),
    ]
    if "floor" in res:
        f = scaled(res["floor"]["summary"], 1000)
        res["rows"].append(row(
            "1 CLI round trip", "floor: `minder version`, one gRPC round trip of an empty request, same socket "
            "(peer cell: `status` ÷ floor)", "ms", f, None,
            peers={"status ÷ floor": f"{m['median'] / f['median']:.2f}×"} if m and f else None))
    return res


# -- 2. start all / stop all ---------------------------------------------------------------


def _start_all(d, n, timeout=600):
    """`start all`, timed until every process is RUNNING (the CLI waits for it; if it returned
    earlier, polling `status` until they are is part of the time)."""
    t0 = time.monotonic()
    r = d.ctl("start", "all", timeout=timeout)
    t = cli = time.monotonic() - t0
    states = d.states()
    while states.get("RUNNING", 0) < n and time.monotonic() - t0 < timeout:
        time.sleep(0.01)
        states = d.states()
        t = time.monotonic() - t0
    ok = states.get("RUNNING", 0) == n
    return t, {"cli_exit": r.returncode, "cli_s": cli, "all_running": ok, "states": states}


def _stop_all(d, timeout=600):
    """`stop all`, timed until every child the daemon had is gone."""
    pids = d.child_pids()
    t0 = time.monotonic()
    r = d.ctl("stop", "all", timeout=timeout)
    t_cli = time.monotonic()
    cli = t_cli - t0
    # Both CLIs return once every process is STOPPED, which both daemons record only after
    # reaping the child: then the children were gone when the CLI returned, and the time
    # spent here reading /proc (milliseconds for hundreds of pids) is not the daemon's.
    done = t_cli if all_gone(pids) else wait_until(lambda: all_gone(pids), timeout)
    t = (done - t0) if done else None
    return t, {"cli_exit": r.returncode, "cli_s": cli, "children": len(pids), "all_gone": done is not None}


def startstop(ctx):
    """`start all` and `stop all` of N sleep programs (startsecs=0)."""
    sizes = ctx.p([100, 500], [50])
    reps = ctx.p(5, 1)
    res = {"params": {"sizes": sizes, "repetitions": reps}, "rows": []}
    for n in sizes:
        progs = [Program("p", SLEEP, numprocs=n, autostart=False)]
        daemons = {k: ctx.daemon(k, progs, tag=f"ss{n}") for k in ctx.kinds}
        failed = {}
        for peer in ctx.peers:  # the peers join the interleaving; one that cannot start is a cell
            try:
                daemons[peer] = ctx.daemon(peer, progs, tag=f"ss{n}")
            except RuntimeError as e:
                failed[peer] = f"failed: {e}"
        for kind, d in list(daemons.items()):
            try:
                d.start()
            except RuntimeError as e:
                if kind not in ctx.peers:
                    raise
                failed[kind] = f"failed: {str(e)[:200]}"
                del daemons[kind]
        per = {k: {"start_s": [], "stop_s": [], "details": []} for k in daemons}
        # A peer whose start and stop took more than 20 s runs no more repetitions at this
        # size (pm2 takes 35 s to stop 100): its cell is the repetitions it ran.
        slow = {}
        for rep in range(reps):
            for kind, d in daemons.items():  # interleaved: minder, supervisord, minder, ...
                if kind in slow:
                    continue
                settle(daemons.values())
                ts, info_start = _start_all(d, n)
                settle(daemons.values())
                tp, info_stop = _stop_all(d)
                per[kind]["start_s"].append(ts)
                per[kind]["stop_s"].append(tp)
                per[kind]["details"].append({"start": info_start, "stop": info_stop})
                ctx.log(f"start/stop {n} {kind} #{rep + 1}: start {ts:.3f} s, stop {tp if tp is None else round(tp, 3)} s")
                if kind in ctx.peers and ts + (tp if tp is not None else 600) > 20 and rep + 1 < reps:
                    slow[kind] = rep + 1
        for d in daemons.values():
            d.terminate()
        for kind in per:
            per[kind]["start"] = summary(per[kind]["start_s"])
            per[kind]["stop"] = summary(per[kind]["stop_s"])
        res[str(n)] = per
        target = "≥ 5× faster" if n == 500 else None
        check = (lambda m, o, r: r >= 5) if n == 500 else None
        for op in ("start", "stop"):
            m = scaled(per.get("minder", {}).get(op), 1000)
            s = scaled(per.get("supervisord", {}).get(op), 1000)
            pc = {k: failed.get(k) or scaled(per[k][op], 1000) for k in ctx.peers}
            note = "; ".join(f"{k}: {r} of {reps} repetitions (a start and stop took over 20 s)" for k, r in slow.items())
            res["rows"].append(row("2 start/stop", f"`{op} all`, {n} programs", "ms", m, s, target=target, check=check,
                                   peers=pc, note=note or None))
    return res


# -- 3. footprint and idle cost ------------------------------------------------------------


def footprint(ctx):
    """RSS/PSS with N running programs; CPU time and context switches while idle."""
    sizes = ctx.p([100, 500], [50])
    window = ctx.p(30.0, 1.0)
    res = {"params": {"sizes": sizes, "idle_window_s": window}, "rows": []}
    for n in sizes:
        progs = [Program("p", SLEEP, numprocs=n)]
        daemons = {k: ctx.daemon(k, progs, tag=f"fp{n}") for k in ctx.kinds}
        failed = {}
        for peer in ctx.peers:
            try:
                d = daemons[peer] = ctx.daemon(peer, progs, tag=f"fp{n}")
                d.start()
            except RuntimeError as e:
                failed[peer] = f"failed: {str(e)[:200]}"
                daemons.pop(peer, None)
        for kind, d in list(daemons.items()):
            if d.running() is False or d.pid is None:
                d.start()
            if d.wait_all_running(n, 300) is None:
                if kind not in ctx.peers:
                    raise RuntimeError(f"{kind}: not all {n} programs RUNNING")
                failed[kind] = f"failed: not all {n} programs running"  # the others' figures stand
                d.terminate()
                del daemons[kind]
        # Every process that supervises: the daemon, and s6's and runit's one per program.
        sup = {k: d.supervising_pids() for k, d in daemons.items()}
        # Settle, then one status request so both have served the API once.
        time.sleep(ctx.p(1.0, 0.3))
        for d in daemons.values():
            d.ctl("status")
        time.sleep(ctx.p(1.0, 0.3))
        # Both daemons idle through the same window; each is measured on its own counters.
        fp = lambda k: procfs.group_footprint(sup[k])  # noqa: E731
        counters = lambda k: tuple(sum(f(p) or 0 for p in sup[k])  # noqa: E731
                                   for f in (procfs.cpu_ns, procfs.context_switches, procfs.cpu_ticks_seconds))
        samples = {k: [fp(k)] for k in daemons}
        before = {k: counters(k) for k in daemons}
        t0 = time.monotonic()
        time.sleep(window / 2)
        for k in daemons:
            samples[k].append(fp(k))
        time.sleep(window / 2)
        elapsed = time.monotonic() - t0
        after = {k: counters(k) for k in daemons}
        for k in daemons:
            samples[k].append(fp(k))
        per = {}
        for k in daemons:
            cpu_ms = (after[k][0] - before[k][0]) / 1e6
            cs = after[k][1] - before[k][1]
            per[k] = {
                "samples": samples[k],
                "rss_mib": summary([s["rss_kib"] / 1024 for s in samples[k]]),
                "pss_mib": summary([s["pss_kib"] / 1024 for s in samples[k]]),
                "fds": samples[k][-1]["fds"],
                "threads": samples[k][-1]["threads"],
                "idle_window_s": elapsed,
                "idle_cpu_ms": cpu_ms,
                "idle_cpu_ticks_s": after[k][2] - before[k][2],
                "idle_context_switches": cs,
                "idle_wakeups_per_s": cs / elapsed,
                "processes": len(sup[k]),
            }
            ctx.log(f"footprint {n} {k}: RSS {per[k]['rss_mib']['median']:.1f} MiB, PSS {per[k]['pss_mib']['median']:.1f} MiB, "
                    f"idle {cpu_ms:.1f} ms CPU, {cs} context switches in {elapsed:.0f} s")
        for d in daemons.values():
            d.terminate()
        res[str(n)] = per
        m, s = per.get("minder", {}), per.get("supervisord", {})
        quarter = lambda m, o, r: r >= 4  # noqa: E731 — minder ≤ 1/4 of supervisord (issue 17)
        pc = lambda key, f=None: {k: failed.get(k) or (f(per[k]) if f else per[k][key]) for k in ctx.peers}  # noqa: E731
        res["rows"] += [
            row("3 footprint", f"daemon RSS, {n} programs running (all supervising processes: minderd's sentinel too)", "MiB",
                m.get("rss_mib"), s.get("rss_mib"), target="≤ 1/4 of supervisord's, below every peer's",
                check=lambda m, o, r, n=n: quarter(m, o, r) and all(
                    m["median"] < per[k]["rss_mib"]["median"] for k in ctx.peers if k in per),
                peers=pc("rss_mib")),
            row("3 footprint", f"daemon PSS, {n} programs running (all supervising processes)", "MiB",
                m.get("pss_mib"), s.get("pss_mib"), target="≤ 1/4 of supervisord's", check=quarter, peers=pc("pss_mib")),
        ]
        if n == sizes[0] or not ctx.quick:
            res["rows"] += [
                row("3 idle", f"CPU time over {window:.0f} s idle, {n} programs", "ms",
                    one(m.get("idle_cpu_ms")), one(s.get("idle_cpu_ms")),
                    target="minder ~0", check=lambda m, o, r: m["median"] <= 1.0,
                    peers=pc(None, lambda v: one(v["idle_cpu_ms"]))),
                row("3 idle", f"context switches over {window:.0f} s idle, {n} programs", "count",
                    one(m.get("idle_context_switches")), one(s.get("idle_context_switches")),
                    target="minder ~0 (no periodic wake-ups)", check=lambda m, o, r: m["median"] <= 2,
                    peers=pc(None, lambda v: one(v["idle_context_switches"]))),
            ]
    res["rows"] += _footprint_floor(ctx, sizes, res)
    return res


def _floor_kib(ctx, n):
    """KiB per program of footprint_floor holding `n` programs (see its doc)."""
    with tempfile.TemporaryDirectory(prefix="minder-floor-") as d:
        r = subprocess.run([str(ctx.tools.floor), str(n), d], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"footprint_floor {n}: exit {r.returncode}: {r.stderr[:300]}")
    count, before, after = (int(x) for x in r.stdout.split())
    return (after - before) / count


def _footprint_floor(ctx, sizes, res):
    """minderd's memory per running program (the RSS slope between the two sizes) against
    the per-program floor on tokio (server/examples/footprint_floor.rs) at the same sizes."""
    if ctx.tools.floor is None or len(sizes) < 2 or "minder" not in ctx.kinds:
        return []
    lo, hi = sizes[0], sizes[-1]
    rss = lambda n: res[str(n)]["minder"]["rss_mib"]["median"] * 1024  # noqa: E731
    slope = (rss(hi) - rss(lo)) / (hi - lo)
    floor = [_floor_kib(ctx, n) for n in (lo, hi)]
    res["floor"] = {"minder_kib_per_program": slope, "floor_kib_per_program": floor}
    ctx.log(f"footprint: minderd {slope:.2f} KiB per program ({lo}→{hi}), floor {floor[0]:.2f}/{floor[1]:.2f} KiB")
    return [row("3 footprint", f"RSS per running program (minderd: slope {lo}→{hi}; peer cell: the floor, one tokio task, "
                               "its pipes and two log files, at the larger size)", "KiB",
                one(slope), None, target="≤ 3 KiB per idle program",
                check=lambda m, o, r: m["median"] <= 3, peers={"floor": one(floor[1])})]


# -- 4. log capture ------------------------------------------------------------------------


def _sha256(path):
    return _files_sha256([path])


def _read_stamp(path):
    start, end, cpu = (int(x) for x in open(path).read().split())
    return start, end, cpu


def _size(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _capture_result(total, path, stamp, t_done_ns, cpu_s, expected_sha):
    start, end, kid_cpu = _read_stamp(stamp)
    size = _size(path)
    sha = _sha256(path) if size == total else None
    r = {
        "bytes": size,
        "lost_bytes": max(total - size, 0),
        "sha256": sha,
        "intact": size == total and (expected_sha is None or sha == expected_sha),
        "writer_s": (end - start) / 1e9,
        "end_to_end_s": (t_done_ns - start) / 1e9 if t_done_ns else None,
        "writer_cpu_s": kid_cpu / 1e9,
        "consumer_cpu_s": cpu_s,
    }
    r["mib_per_s"] = total / MIB / r["end_to_end_s"] if r["end_to_end_s"] else None
    r["writer_mib_per_s"] = total / MIB / r["writer_s"]
    r["cpu_s_per_gib"] = cpu_s / (total / GIB) if cpu_s is not None else None
    return r


def _baseline(ctx, total, workdir, expected_sha):
    """`sh -c 'kid lines N | cat > file'`: the same writer into a plain pipe and cat."""
    path, stamp = workdir / "baseline.log", workdir / "baseline.stamp"
    for p in (path, stamp):
        p.unlink(missing_ok=True)
    cmd = f"{shlex.quote(str(ctx.tools.kid))} lines {total} {shlex.quote(str(stamp))} | cat > {shlex.quote(str(path))}"
    pid = os.posix_spawn("/bin/sh", ["sh", "-c", cmd], dict(os.environ))
    done = wait_until(lambda: stamp.exists() and _size(path) >= total, 600)
    t_done_ns = time.time_ns() if done else None
    _, _, ru = os.wait4(pid, 0)
    r = _capture_result(total, path, stamp, t_done_ns, None, expected_sha)
    # sh reaped kid and cat: what it used, less kid's own, is cat's (sh's share is tiny).
    r["consumer_cpu_s"] = ru.ru_utime + ru.ru_stime - r["writer_cpu_s"]
    r["cpu_s_per_gib"] = r["consumer_cpu_s"] / (total / GIB)
    path.unlink(missing_ok=True)
    return r


def _daemon_capture(d, total, path, stamp, expected_sha):
    for p in (path, stamp):
        p.unlink(missing_ok=True)
    cpu0 = procfs.cpu_ns(d.pid)
    r = d.ctl("start", "cap")
    done = wait_until(lambda: stamp.exists() and _size(path) >= total, 600)
    t_done_ns = time.time_ns() if done else None
    if not done:  # the writer finished (or died): give the daemon a moment to write the rest
        time.sleep(2)
    # Wait for the daemon to have seen the exit, so its CPU for the whole transfer is counted.
    wait_until(lambda: "EXITED" in d.states(), 30, poll=0.05)
    cpu1 = procfs.cpu_ns(d.pid)
    res = _capture_result(total, path, stamp, t_done_ns, (cpu1 - cpu0) / 1e9, expected_sha)
    res["start_exit"] = r.returncode
    path.unlink(missing_ok=True)
    return res


def _files_size(files):
    return sum(_size(f) for f in files)


def _files_sha256(files):
    """The sha256 of the files' contents, one after the other."""
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            while True:
                b = f.read(4 * MIB)
                if not b:
                    break
                h.update(b)
    return h.hexdigest()


def _open_gate(gate, timeout):
    """Opens the fifo `gate` for writing once its reader (the gated program) has opened it,
    and writes the line that lets the program go. Returns False if no reader came."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(gate, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: nobody reads it yet
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)
    return True


def _gated(command, gate):
    """A program that waits for a line on the fifo `gate` and then execs `command`: the peers
    have no "defined but not started" that works alike for all four, so each starts the
    program as it starts, and the scenario lets it go when it is ready to measure."""
    return f"/bin/sh -c {shlex.quote(f'read go < {shlex.quote(str(gate))}; exec {command}')}"


def _peer_capture(ctx, kind, total, reps, workdir, expected):
    """The same capture under a peer, one fresh daemon per repetition (each preceded by its own
    `cat` baseline): circus's FileStream, pm2's out_file, an s6-log or svlogd log/ service.
    CPU is that of every supervising and logging process from the moment the program is let
    go until its last byte is on disk and it has exited."""
    runs, notes = [], set()
    for rep in range(reps):
        b = _baseline(ctx, total, workdir, expected)
        stamp, gate = workdir / f"{kind}-{rep}.stamp", workdir / f"{kind}-{rep}.gate"
        target = workdir / f"{kind}-{rep}.log"  # a file (circus, pm2) or the logger's directory (s6, runit)
        os.mkfifo(gate)
        prog = Program("cap", _gated(f"{ctx.tools.kid} lines {total} {stamp}", gate), autorestart=False,
                       stdout_logfile=str(target))
        d = ctx.daemon(kind, [prog], tag="cap")
        d.run_once = True  # s6 and runit would restart the writer when it exits
        d.start()
        files = lambda: d.output_files(prog)  # noqa: E731 — s6-log adds an archive each rotation
        if wait_until(lambda: any(procfs.comm(p) == "sh" for p in procfs.children_of(d.supervising_pids())), 60) is None:
            raise RuntimeError(f"{kind}: the program did not start")
        settle([d])
        procs = d.supervising_pids() + d.logger_pids()
        cpu0 = sum(procfs.cpu_ns(p) or 0 for p in procs)
        if not _open_gate(gate, 30):
            raise RuntimeError(f"{kind}: the program did not open its gate")
        # Until every byte is on disk, or the writer has exited and nothing more arrived for 10 s
        # (a peer that drops output never gets there: pm2 lost bytes in trial runs).
        seen = {"size": -1, "at": time.monotonic()}

        def finished():
            size = _files_size(files())
            if stamp.exists() and size >= total:
                return True
            if size != seen["size"]:
                seen.update(size=size, at=time.monotonic())
                return False
            writing = any(procfs.comm(p) == "kid" for p in procfs.children_of(d.supervising_pids()))
            return not writing and time.monotonic() - seen["at"] > 10 and "stalled"

        done = wait_until(finished, 300, poll=0.01)
        if done and _files_size(files()) < total:
            done = None
        t_done_ns = time.time_ns() if done else None
        if not done:
            time.sleep(2)
        # The writer has exited and the supervisor has seen it, so its work is all counted.
        wait_until(lambda: not any(procfs.comm(p) == "kid" for p in procfs.children_of(d.supervising_pids())), 30)
        time.sleep(0.1)
        cpu1 = sum(procfs.cpu_ns(p) or 0 for p in procs)
        fs = [f for f in files() if f.exists()]
        r = _capture_result(total, fs[-1] if fs else target, stamp, t_done_ns, (cpu1 - cpu0) / 1e9, None)
        r["bytes"] = size = _files_size(fs)
        r["files"] = len(fs)
        r["lost_bytes"] = max(total - size, 0)
        r["sha256"] = _files_sha256(fs) if size == total else None
        r["intact"] = size == total and (expected is None or r["sha256"] == expected)
        r["pct_of_cat"] = r["mib_per_s"] / b["mib_per_s"] * 100 if r["mib_per_s"] and b["mib_per_s"] else None
        r["processes"] = len(procs)
        if len(fs) > 1:
            notes.add(f"{kind}'s logger rotated into {len(fs)} files; their concatenation in order is checked")
        d.terminate()
        for f in fs:
            f.unlink(missing_ok=True)
        ctx.log(f"capture {kind} #{rep + 1}: {r['mib_per_s'] or 0:.0f} MiB/s ({r['pct_of_cat'] or 0:.0f}% of cat), "
                f"lost {r['lost_bytes']} bytes, intact {r['intact']}, {r['cpu_s_per_gib']:.2f} CPU s/GiB "
                f"({len(procs)} processes)")
        runs.append(r)
        if not r["intact"]:
            notes.add(f"{kind} lost {r['lost_bytes']} bytes in repetition {rep + 1}; no more repetitions were run")
            break
    return {
        "runs": runs,
        "mib_per_s": summary([r["mib_per_s"] for r in runs]),
        "pct_of_cat": summary([r["pct_of_cat"] for r in runs]),
        "cpu_s_per_gib": summary([r["cpu_s_per_gib"] for r in runs]),
        "lost_bytes": sum(r["lost_bytes"] for r in runs),
        "all_intact": all(r["intact"] for r in runs),
        "note": "; ".join(sorted(notes)) or None,
    }


def capture(ctx):
    """A child writes BYTES of 64-byte lines to stdout; the daemon captures it into a file."""
    total = ctx.p(512, 32) * MIB
    reps = ctx.p(5, 1)
    workdir = ctx.root / f"capture-{time.monotonic_ns()}"
    workdir.mkdir()
    res = {"params": {"bytes": total, "line_bytes": 64, "repetitions": reps}, "rows": []}
    runs = {k: [] for k in ["baseline", *ctx.kinds]}
    daemons = {}
    for kind in ctx.kinds:
        stamp = workdir / f"{kind}.stamp"
        path = workdir / f"{kind}.log"
        prog = Program("cap", f"{ctx.tools.kid} lines {total} {stamp}", autostart=False, autorestart=False,
                       stdout_logfile=str(path), stdout_logfile_maxbytes=0)
        d = ctx.daemon(kind, [prog], tag="cap")
        d.start()
        daemons[kind] = (d, path, stamp)
    expected = None
    for rep in range(reps):
        settle([x[0] for x in daemons.values()])
        b = _baseline(ctx, total, workdir, expected)
        if expected is None and b["bytes"] == total:
            expected = b["sha256"]
        runs["baseline"].append(b)
        ctx.log(f"capture baseline #{rep + 1}: {b['mib_per_s']:.0f} MiB/s")
        for kind, (d, path, stamp) in daemons.items():
            settle([x[0] for x in daemons.values()])
            r = _daemon_capture(d, total, path, stamp, expected)
            runs[kind].append(r)
            ctx.log(f"capture {kind} #{rep + 1}: {r['mib_per_s'] or 0:.0f} MiB/s, lost {r['lost_bytes']} bytes, "
                    f"intact {r['intact']}, {r['cpu_s_per_gib']:.2f} CPU s/GiB")
    for d, _, _ in daemons.values():
        d.terminate()
    res["expected_sha256"] = expected
    res["peers"] = run_peers(ctx, "capture", lambda kind: _peer_capture(ctx, kind, total, reps, workdir, expected))
    for k, rs in runs.items():
        res[k] = {
            "runs": rs,
            "mib_per_s": summary([r["mib_per_s"] for r in rs]),
            "writer_mib_per_s": summary([r["writer_mib_per_s"] for r in rs]),
            "cpu_s_per_gib": summary([r["cpu_s_per_gib"] for r in rs]),
            "lost_bytes": sum(r["lost_bytes"] for r in rs),
            "all_intact": all(r["intact"] for r in rs),
        }
    base = res["baseline"]["mib_per_s"]
    for k in ctx.kinds:
        # Each repetition ran cat, minder and supervisord back to back: compare within it.
        pct = [r["mib_per_s"] / b["mib_per_s"] * 100 if r["mib_per_s"] and b["mib_per_s"] else None
               for r, b in zip(runs[k], runs["baseline"])]
        res[k]["pct_of_cat"] = summary(pct)
    m, s = res.get("minder", {}), res.get("supervisord", {})
    mib = total // MIB
    pc = lambda f: peer_cells(res["peers"], f)  # noqa: E731
    lost = lambda v: one(v["lost_bytes"]) if v["all_intact"] else f"{v['lost_bytes']:,} lost; not intact"  # noqa: E731
    notes = [v["note"] for v in res["peers"].values() if isinstance(v, dict) and v.get("note")]
    res["rows"] = [
        row("4 log capture", f"throughput, {mib} MiB of 64-byte lines (cat: {base['median']:.0f} MiB/s)", "MiB/s",
            m.get("mib_per_s"), s.get("mib_per_s"), better="higher", peers=pc(lambda v: v["mib_per_s"])),
        row("4 log capture", "throughput as % of `kid | cat > file` (same repetition)", "%",
            m.get("pct_of_cat"), s.get("pct_of_cat"), better="higher",
            target="minder ≥ 95%", check=lambda m, o, r: m["median"] >= 95, peers=pc(lambda v: v["pct_of_cat"])),
        row("4 log capture", "bytes lost, all repetitions (size and sha256 vs cat's file)", "bytes",
            one(m.get("lost_bytes")), one(s.get("lost_bytes")), ratio_from=None,
            target="0, checksums equal", check=lambda mm, o, r: mm["median"] == 0 and m["all_intact"],
            peers=pc(lost), note=" ".join(notes) or None),
        row("4 log capture", "daemon CPU per GiB captured (peers: every supervising and logging process; cat: "
            f"{res['baseline']['cpu_s_per_gib']['median']:.2f})", "s/GiB",
            m.get("cpu_s_per_gib"), s.get("cpu_s_per_gib"), peers=pc(lambda v: v["cpu_s_per_gib"])),
    ]
    res["supervisord_intact"] = s.get("all_intact")
    return res


# -- 5. crash to respawn -------------------------------------------------------------------


def _gaps(log_lines, name):
    """ms from each `exited: NAME` line to the next `spawned: 'NAME'` line."""
    gaps, t_exit = [], None
    for line in log_lines:
        if f"exited: {name} " in line:
            t_exit = log_time(line)
        elif f"spawned: '{name}'" in line and t_exit is not None:
            gaps.append((log_time(line) - t_exit) * 1000)
            t_exit = None
    return gaps


def _stamp_gaps(path):
    """ms from each "e" (exit) stamp of `kid crash` to the next "s" (start) stamp."""
    gaps, t_exit = [], None
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return gaps
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        if parts[0] == "e":
            t_exit = int(parts[1])
        elif parts[0] == "s" and t_exit is not None:
            gaps.append((int(parts[1]) - t_exit) / 1e6)
            t_exit = None
    return gaps


def respawn(ctx):
    """A program exits 0.2 s after starting (after reaching RUNNING); autorestart=true."""
    cycles = {"minder": ctx.p(40, 4), "supervisord": ctx.p(12, 2)}
    peer_cycles = ctx.p(12, 3)
    workdir = ctx.root / f"respawn-{time.monotonic_ns()}"
    workdir.mkdir()

    def program(kind):
        # bench/kid.c's crash mode stamps CLOCK_REALTIME as it starts and just before it
        # exits: the gap seen from the program's side, the same for every supervisor.
        return Program("crash", f"{ctx.tools.kid} crash 200 {workdir / (kind + '.stamps')}",
                       startsecs=0.1, sv_startsecs=0, autorestart=True)

    res = {"params": {"command": f"{ctx.tools.kid} crash 200 STAMPFILE", "startsecs": {"minder": 0.1, "supervisord": 0},
                      "cycles": {**cycles, "peers": peer_cycles}}}
    for kind in ctx.kinds:
        d = ctx.daemon(kind, [program(kind)], tag="crash")
        d.start()
        w = d.watcher(from_end=False)
        got = w.wait_count("exited: crash ", cycles[kind] + 1, cycles[kind] * 3 + 20, alive=d.running)
        d.terminate()
        lines = d.log_path.read_text(errors="replace").splitlines()
        gaps = _gaps(lines, "crash")[: cycles[kind]]
        stamp_gaps = _stamp_gaps(workdir / f"{kind}.stamps")[: cycles[kind]]
        res[kind] = {"gaps_ms": gaps, "summary": summary(gaps), "complete": got is not None,
                     "stamp_gaps_ms": stamp_gaps, "stamp_summary": summary(stamp_gaps)}
        sm, ss = res[kind]["summary"], res[kind]["stamp_summary"]
        ctx.log(f"respawn {kind}: median {sm['median'] if sm else None} ms over {len(gaps)} restarts (log lines), "
                f"{ss['median'] if ss else None} ms (program's stamps)")

    def peer(kind):
        """The peer restarts the same program (circus respawn = true, pm2 autorestart with
        min_uptime = 100 ms, s6 and runit always restart) until `peer_cycles` gaps are stamped."""
        stamps = workdir / f"{kind}.stamps"
        d = ctx.daemon(kind, [program(kind)], tag="crash")
        d.start()
        done = wait_until(lambda: len(_stamp_gaps(stamps)) >= peer_cycles, peer_cycles * 5 + 30, poll=0.05)
        d.terminate()
        gaps = _stamp_gaps(stamps)[:peer_cycles]
        out = {"stamp_gaps_ms": gaps, "summary": summary(gaps), "complete": done is not None}
        if not gaps:
            text = stamps.read_text()[:200] if stamps.exists() else "none"
            raise RuntimeError(f"{kind} did not restart the program (stamps: {text})")
        ctx.log(f"respawn {kind}: median {out['summary']['median']:.1f} ms over {len(gaps)} restarts "
                "(program's stamps)")
        return out

    res["peers"] = run_peers(ctx, "respawn", peer)
    m, s = res.get("minder", {}).get("summary"), res.get("supervisord", {}).get("summary")
    ms, ss = res.get("minder", {}).get("stamp_summary"), res.get("supervisord", {}).get("stamp_summary")

    def peer_cell(v):
        if not v["complete"]:
            return f"{len(v['stamp_gaps_ms'])} of {peer_cycles} restarts in {peer_cycles * 5 + 30} s"
        return v["summary"]

    res["rows"] = [
        row("5 crash→respawn", "`exited:` to next `spawned:` log line (ms timestamps)", "ms", m, s,
            target="minder ≤ 10 ms", check=lambda m, o, r: m["median"] <= 10,
            peers={k: "n/a: Supervisor's log lines; every daemon is in the row below" for k in ctx.peers}),
        row("5 crash→respawn", "program's stamp just before it exits to its next start stamp (CLOCK_REALTIME)", "ms",
            ms, ss, peers=peer_cells(res["peers"], peer_cell),
            note="by design, s6-supervise and runsv wait 1 s before restarting a service (their throttle "
                 "against restart loops), and circusd reaps and respawns on its check_delay poll (5 s, the "
                 "default of an ini file), so a program that lives 0.2 s waits about 4.8 s"
            if {"s6", "runit", "circus"} & set(ctx.peers) else None),
    ]
    return res


# -- 6. tail -f latency --------------------------------------------------------------------


def _tail_latency(ctx, d, count, interval_ms, argv=None, start=None, connect_s=0.7):
    """`argv` (default: the daemon's `tail -f tick`) on a pty; `start()` (default: its
    `start tick`) sets the writer going once the follower has had `connect_s` to connect."""
    master, slave = pty.openpty()
    tty.setraw(slave)  # no \n -> \r\n, no echo: bytes as the CLI printed them
    err = open(d.dir / "tail.err", "wb")
    tail = register(subprocess.Popen(argv or d.ctl_argv("tail", "-f", "tick"), stdin=subprocess.DEVNULL, stdout=slave,
                                     stderr=err, env=d.env))
    os.close(slave)
    err.close()
    buf = b""

    def drain(until):
        nonlocal buf
        lines = []
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return lines
            r, _, _ = select.select([master], [], [], min(left, 0.2))
            if not r:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:
                return lines
            now = time.time_ns()
            buf += data
            *complete, buf = buf.split(b"\n")
            lines += [(now, l) for l in complete]
            if lines and lines[-1][1].split()[:1] == [str(count - 1).encode()]:
                return lines

    drain(time.monotonic() + connect_s)  # let it connect and print its banner
    t_start = time.time_ns()
    r = start() if start else d.ctl("start", "tick")
    lines = drain(time.monotonic() + count * interval_ms / 1000 + 10)
    tail.send_signal(signal.SIGINT)
    try:
        tail.wait(5)
    except subprocess.TimeoutExpired:
        tail.kill()
        tail.wait()
    forget(tail)
    os.close(master)
    lat, seqs = [], set()
    for now, l in lines:
        parts = l.strip().split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            seq, ts = int(parts[0]), int(parts[1])
            if ts >= t_start:
                lat.append((now - ts) / 1e6)
                seqs.add(seq)
    return {"start_exit": getattr(r, "returncode", r), "latencies_ms": lat, "lines_received": len(seqs),
            "lines_written": count}


def tailf(ctx):
    """Latency from a child writing a line to `tail -f` printing it (on a terminal)."""
    count = ctx.p(300, 20)
    interval = 50
    prog = Program("tick", f"{ctx.tools.kid} tick {count} {interval}", autostart=False, autorestart=False)
    res = {"params": {"lines": count, "interval_ms": interval, "output": "pty (raw)"}}
    for kind in ctx.kinds:
        d = ctx.daemon(kind, [prog], tag="tail")
        d.start()
        r = _tail_latency(ctx, d, count, interval)
        d.terminate()
        r["summary"] = summary(r["latencies_ms"])
        res[kind] = r
        sm = r["summary"] or {}
        ctx.log(f"tail -f {kind}: {r['lines_received']}/{count} lines, p50 {sm.get('median')} ms, p99 {sm.get('p99')} ms")
    workdir = ctx.root / f"tail-{time.monotonic_ns()}"
    workdir.mkdir()

    def peer(kind):
        """pm2: `pm2 logs tick --raw --lines 0`; circus, s6 and runit have no follower of
        their own, and their users run `tail -F` on the file the output is captured into
        (circus's FileStream, s6-log's or svlogd's `current`). The program is gated on a
        fifo, as in the capture scenario, and let go once the follower has connected."""
        gate = workdir / f"{kind}.gate"
        os.mkfifo(gate)
        target = workdir / f"{kind}.log"  # a file (circus, pm2) or the logger's directory (s6, runit)
        p = Program("tick", _gated(f"{ctx.tools.kid} tick {count} {interval}", gate), autorestart=False,
                    stdout_logfile=str(target))
        if kind == "circus":
            target.touch()  # FileStream opens it on the first write: have `tail -F` follow it from the start
        d = ctx.daemon(kind, [p], tag="tail")
        d.run_once = True  # s6 and runit would restart the writer when it exits
        d.start()
        followed = Path(d.tail_argv(p)[-1])
        if kind != "pm2" and wait_until(followed.exists, 30) is None:
            raise RuntimeError(f"{kind}: {followed} did not appear")
        r = _tail_latency(ctx, d, count, interval, argv=d.tail_argv(p),
                          start=lambda: 0 if _open_gate(gate, 30) else 1, connect_s=3.0 if kind == "pm2" else 0.7)
        d.terminate()
        r["argv"] = d.tail_argv(p)
        r["summary"] = summary(r["latencies_ms"])
        sm = r["summary"] or {}
        ctx.log(f"tail -f {kind}: {r['lines_received']}/{count} lines, p50 {sm.get('median')} ms, "
                f"p99 {sm.get('p99')} ms")
        if not r["latencies_ms"]:
            raise RuntimeError(f"{kind}: `{shlex.join(r['argv'])}` printed none of the lines")
        return r

    res["peers"] = run_peers(ctx, "tailf", peer)
    m, s = res.get("minder", {}).get("summary"), res.get("supervisord", {}).get("summary")
    pc = peer_cells(res["peers"], lambda v: v["summary"])
    res["rows"] = [
        row("6 tail -f", f"latency p50, {count} lines at {1000 // interval}/s", "ms", m, s, peers=pc,
            note=("peers: `pm2 logs tick --raw --lines 0`; circus, s6 and runit have no follower command, so "
                  "`tail -F` of the file they capture into (circus's FileStream, s6-log's and svlogd's `current`)"
                  if ctx.peers else None)),
        row("6 tail -f", f"latency p99, {count} lines at {1000 // interval}/s", "ms", m, s, ratio_from="p99",
            target="minder p99 ≤ 5 ms", check=lambda m, o, r: m["p99"] <= 5, peers=pc),
    ]
    received = {**{k: res[k]["lines_received"] for k in ctx.kinds},
                **{k: v["lines_received"] for k, v in res["peers"].items() if isinstance(v, dict)}}
    for kind, got in received.items():
        if got != count:
            res["rows"][-1]["note"] = (res["rows"][-1]["note"] or "") + f"{kind} printed {got}/{count} lines. "
    return res


# -- 7. scale ------------------------------------------------------------------------------


def _scale_one(ctx, kind, n, limit, status_runs, start_stop, capture=True):
    """Start-up with `n` programs (until all RUNNING, at most `limit` s), footprint, status
    latency, optionally `stop all` + `start all`, then shutdown. Without `capture`, the
    programs' output is not captured (stdout_logfile=NONE, redirect_stderr=true)."""
    if capture:
        progs = [Program("p", SLEEP, numprocs=n)]
    else:
        progs = [Program("p", SLEEP, numprocs=n, stdout_logfile="NONE", redirect_stderr=True)]
    d = ctx.daemon(kind, progs, tag=f"scale{n}")
    out = {"programs": n, "limit_s": limit, "output_captured": capture}
    t0 = d.start(ready_timeout=limit)
    w = d.watcher(from_end=False)
    t_all = w.wait_count("entered RUNNING state", n, limit, alive=d.running, poll=0.05)
    out["all_running"] = t_all is not None
    out["startup_s"] = (t_all - t0) if t_all else None
    if not t_all:
        out["running_at_limit"] = getattr(w, "seen", None)
        out["last_running_after_s"] = (w.last_at - t0) if w.last_at else None
        out["daemon_alive"] = d.running()
        ctx.log(f"scale {n} {kind}: {out['running_at_limit']} RUNNING after {limit} s (daemon alive: {out['daemon_alive']})")
    else:
        ctx.log(f"scale {n} {kind}: all RUNNING after {out['startup_s']:.2f} s")
    if d.running():
        time.sleep(ctx.p(1.0, 0.3))
        out["footprint"] = procfs.footprint(d.pid)
        t, r = timed(d.ctl_argv("status"), timeout=limit, env=d.env)
        out["status_first_s"] = t
        out["status_exit"] = r.returncode
        if status_runs and out["all_running"]:
            out["status_s"] = summary(time_command(d.ctl_argv("status"), status_runs, 1, ctx.tools.hyperfine, d.env))
        if start_stop and out["all_running"]:
            out["stop_all_s"], out["stop_info"] = _stop_all(d, timeout=limit)
            out["start_all_s"], out["start_info"] = _start_all(d, n, timeout=limit)
            ctx.log(f"scale {n} {kind}: stop all {out['stop_all_s']} s, start all {out['start_all_s']:.2f} s")
        out["footprint_after"] = procfs.footprint(d.pid)
        pids = d.child_pids()
        t_sd = time.monotonic()
        took, killed = d.terminate(grace=limit)
        done = (t_sd + took) if all_gone(pids) else wait_until(lambda: all_gone(pids), 60)
        out["shutdown_s"] = (done - t_sd) if done else None
        out["shutdown_killed"] = killed
    else:
        d.terminate()
    reap_orphans()
    return out


def _scale_peer(ctx, kind, n, limit, status_runs, start_stop, capture=True):
    """The same steps under a peer, with its own tools: start-up until every program's
    process has exec'ed (counted from /proc, at most `limit` s), the RSS and descriptors of
    every supervising process, `status`, optionally `stop all` + `start all`, then the peer's
    own stop-everything (as in the shutdown scenario) until every process is gone. Output is
    captured as each peer does by default (circus FileStream, pm2 out_file); s6 and runit
    capture nothing per program without log/ services, which this scenario does not add."""
    if capture:
        progs = [Program("p", SLEEP, numprocs=n)]
    else:
        progs = [Program("p", SLEEP, numprocs=n, stdout_logfile="NONE", redirect_stderr=True)]
    d = ctx.daemon(kind, progs, tag=f"scale{n}")
    out = {"programs": n, "limit_s": limit, "output_captured": capture}
    t0 = time.monotonic()
    try:
        d.start(ready_timeout=limit)
    except RuntimeError as e:  # not ready within the limit: count what runs by then
        out["start_error"] = str(e)[:300]
    left = max(limit - (time.monotonic() - t0), 0.1)
    t_all = d.wait_all_running(n, left) if d.running() else None
    out["all_running"] = t_all is not None
    out["startup_s"] = (t_all - t0) if t_all else None
    if not t_all:
        out["running_at_limit"] = len(d.child_pids()) if d.running() else 0
        out["daemon_alive"] = bool(d.running())
        ctx.log(f"scale {n} {kind}: {out['running_at_limit']} running after {limit} s "
                f"(daemon alive: {out['daemon_alive']})")
    else:
        ctx.log(f"scale {n} {kind}: all running after {out['startup_s']:.2f} s")
    if d.running():
        time.sleep(ctx.p(1.0, 0.3))
        sup = d.supervising_pids()
        out["footprint"] = procfs.group_footprint(sup)
        try:
            t, r = timed(d.ctl_argv("status"), timeout=limit, env=d.env)
            out["status_first_s"] = t
            out["status_exit"] = r.returncode
        except subprocess.TimeoutExpired:  # a peer still busy starting may not answer
            out["status_first_error"] = f"`status` had not returned after {limit} s"
        if status_runs and out["all_running"] and "status_first_error" not in out:
            out["status_s"] = summary(time_command(d.ctl_argv("status"), status_runs, 1, ctx.tools.hyperfine, d.env))
        if start_stop and out["all_running"]:
            # A CLI that has not returned within the limit is killed (subprocess.run's
            # timeout): the cell says so, and the figures before and after it stand.
            try:
                out["stop_all_s"], out["stop_info"] = _stop_all(d, timeout=limit)
            except subprocess.TimeoutExpired:
                out["stop_all_error"] = f"`stop all` had not returned after {limit} s"
            try:
                if "stop_all_error" not in out:
                    out["start_all_s"], out["start_info"] = _start_all(d, n, timeout=limit)
            except subprocess.TimeoutExpired:
                out["start_all_error"] = f"`start all` had not returned after {limit} s"
            ctx.log(f"scale {n} {kind}: stop all {out.get('stop_all_s') or out.get('stop_all_error')}, "
                    f"start all {out.get('start_all_s') or out.get('start_all_error')}")
        pids = d.child_pids() + d.supervising_pids()
        t_sd = time.monotonic()
        stopper = d.signal_shutdown() if hasattr(d, "signal_shutdown") else os.kill(d.pid, signal.SIGTERM)
        done = wait_until(lambda: all_gone(pids), limit, poll=0.01)
        out["shutdown_s"] = (done - t_sd) if done else None
        if not done:
            left = sum(1 for p in pids if procfs.alive(p))
            out["shutdown_error"] = f"{left:,} of {len(pids):,} processes still there after {limit} s"
        if stopper is not None:
            wait_exit(stopper, 60)
            forget(stopper)
        ctx.log(f"scale {n} {kind}: shutdown {out['shutdown_s']} s")
    d.terminate(grace=limit)
    reap_orphans()
    return out


def _peer_scale_cells(per, n, key, f=1, fmt=one):
    """{peer: its figure for `key`, what happened instead, or why it did not run}."""
    def cell(v):
        if key == "startup_s" and not v["all_running"]:
            return (f"{v.get('running_at_limit')} of {n} running at the {v['limit_s']} s limit"
                    + ("" if v.get("daemon_alive") else "; daemon gone"))
        x = v.get(key) if key not in ("rss_kib", "pss_kib", "fds") else (v.get("footprint") or {}).get(key)
        if x is None:
            return v.get(key[:-2] + "_error") if key.endswith("_s") else None
        return scaled(x, f) if isinstance(x, dict) else fmt(x * f)
    return peer_cells(per, cell)


def scale(ctx):
    """2000 programs (both daemons), then 10,000 (minder; supervisord within a time limit)."""
    n, big = ctx.p(2000, 100), ctx.p(10000, None)
    limit_n = ctx.p(300, 60)
    big_limits = {"minder": 300, "supervisord": 240, "peers": 240}
    # Descriptors per program with both outputs captured: minderd 3 (stdin, stdout and stderr
    # pipes), supervisord 5 (the same pipes and its two log files, open from spawn on).
    nofile = raise_nofile(131072)
    big_capture = bool(big) and nofile >= 5 * big + 1000
    res = {"params": {"programs": n, "big": big, "limit_s": limit_n, "big_limits_s": big_limits,
                      "nofile": nofile, "big_output_captured": big_capture}, "rows": []}
    ctx.log(f"scale: descriptor limit {nofile}")
    per = {}
    for kind in ctx.kinds:
        per[kind] = _scale_one(ctx, kind, n, limit_n, ctx.p(10, 3) if kind == "minder" else ctx.p(3, 1), True)
    res[str(n)] = per
    # The peers get 120 s per step at this size (minder and supervisord 300 s): pm2's `stop all`
    # of 2,000 had not returned after 300 s in trial runs.
    limit_peers = ctx.p(120, 60)
    pp = res[f"peers_{n}"] = run_peers(ctx, f"scale {n}", lambda k: _scale_peer(ctx, k, n, limit_peers, ctx.p(3, 1), True))
    # The floor for the same count, in the same run (issue 17): the C spawn loop.
    loops = res[f"c_loop_{n}"] = {t: [_c_loop(ctx, n, t) for _ in range(ctx.p(3, 1))] for t in (1, 2)} \
        if "minder" in ctx.kinds else {}
    cl = {f"C loop ×{t}": scaled(summary(v), 1) for t, v in loops.items()}
    within = lambda m, o, r: m["median"] <= 1.2 * min(c["median"] for c in cl.values())  # noqa: E731
    rss_target = lambda count: (f"≤ 8 MiB + 3 KiB per program ({8 + 3 * count / 1024:.1f} MiB)",  # noqa: E731
                                lambda m, o, r: m["median"] <= 8 + 3 * count / 1024)
    procs = {k: v["footprint"]["processes"] for k, v in pp.items() if isinstance(v, dict) and v.get("footprint")}
    g = lambda k, key, f=1: one(per[k][key] * f) if k in per and per[k].get(key) is not None else None  # noqa: E731
    rss = lambda k, key="rss_kib": (one(per[k]["footprint"][key] / 1024)  # noqa: E731
                                    if k in per and per[k].get("footprint") else None)
    st = lambda k: scaled(per[k].get("status_s"), 1000) if k in per else None  # noqa: E731
    fds = lambda k: one(per[k]["footprint"]["fds"]) if k in per and per[k].get("footprint") else None  # noqa: E731
    pc = lambda key, f=1: _peer_scale_cells(pp, n, key, f)  # noqa: E731
    res["rows"] += [
        row("7 scale", f"start-up until all {n} RUNNING (peers: until all have exec'ed)", "s",
            g("minder", "startup_s"), g("supervisord", "startup_s"), peers=pc("startup_s")),
        row("7 scale", f"start-up until all {n} RUNNING, against the C spawn loop (peer cells: the loop)", "s",
            g("minder", "startup_s"), None, target="≤ 1.2× the best C loop", check=within if cl else None, peers=cl),
        row("7 scale", f"`start all` of {n}, against the C spawn loop (peer cells: the loop)", "s",
            g("minder", "start_all_s"), None, target="≤ 1.2× the best C loop", check=within if cl else None, peers=cl),
        row("7 scale", f"`stop all`, {n} programs", "s", g("minder", "stop_all_s"), g("supervisord", "stop_all_s"),
            peers=pc("stop_all_s")),
        row("7 scale", f"`start all`, {n} programs", "s", g("minder", "start_all_s"), g("supervisord", "start_all_s"),
            peers=pc("start_all_s")),
        row("7 scale", f"`status`, {n} programs", "ms", st("minder"), st("supervisord"), peers=pc("status_s", 1000)),
        row("7 scale", f"daemon RSS, {n} programs (peers: every supervising process)", "MiB", rss("minder"),
            rss("supervisord"), peers=pc("rss_kib", 1 / 1024),
            target=rss_target(n)[0], check=rss_target(n)[1],
            note=("supervising processes counted: " + ", ".join(f"{k} {v:,}" for k, v in procs.items())
                  + ". s6 and runit capture no output here (no log/ services); circus and pm2 capture to files"
                  if procs else None)),
        row("7 scale", f"daemon PSS, {n} programs (peers: every supervising process; shared pages split)", "MiB",
            rss("minder", "pss_kib"), rss("supervisord", "pss_kib"), peers=pc("pss_kib", 1 / 1024)),
        row("7 scale", f"daemon fds, {n} programs (peers: every supervising process)", "count", fds("minder"),
            fds("supervisord"), peers=pc("fds")),
        row("7 scale", f"shutdown, {n} programs (peers: their own stop-all)", "s", g("minder", "shutdown_s"),
            g("supervisord", "shutdown_s"), peers=pc("shutdown_s")),
    ]
    if big:
        perb = {}
        for kind in ctx.kinds:
            perb[kind] = _scale_one(ctx, kind, big, big_limits[kind], 3 if kind == "minder" else 0, False, big_capture)
        res[str(big)] = perb
        def big_peer(k):
            # A peer that could not start 2,000 in two minutes is not asked for 10,000.
            small = pp.get(k)
            steps = [small.get(x) for x in ("startup_s", "stop_all_s", "start_all_s")] if isinstance(small, dict) else []
            if not steps or not small.get("all_running") or any(t is None or t > 60 for t in steps):
                shown = ", ".join(f"{x} {t:.0f} s" if t is not None else f"{x} did not finish"
                                  for x, t in zip(("start-up", "stop all", "start all"), steps))
                return f"not run: at {n} programs a step took over 60 s or did not finish ({shown or 'failed'})"
            return _scale_peer(ctx, k, big, big_limits["peers"], 0, False, big_capture)
        ppb = res[f"peers_{big}"] = run_peers(ctx, f"scale {big}", big_peer)
        loopsb = res[f"c_loop_{big}"] = {t: [_c_loop(ctx, big, t, big_capture)] for t in (1, 2)} \
            if "minder" in ctx.kinds and nofile >= (3 if big_capture else 1) * big + 100 else {}
        clb = {f"C loop ×{t}": scaled(summary(v), 1) for t, v in loopsb.items()}
        pcb = lambda key, f=1: _peer_scale_cells(ppb, big, key, f)  # noqa: E731
        gb = lambda k, key: one(perb[k][key]) if k in perb and perb[k].get(key) is not None else None  # noqa: E731
        fb = lambda k, key, f=1: one(perb[k]["footprint"][key] * f) if k in perb and perb[k].get("footprint") else None  # noqa: E731
        note = None if big_capture else (
            f"ulimit -n is {nofile} and cannot be raised here, so the {big}-program run captures no output "
            "(stdout_logfile=NONE, redirect_stderr=true): minderd then holds 1 descriptor per program, supervisord 2. ")
        if "supervisord" in perb and not perb["supervisord"]["all_running"]:
            sv = perb["supervisord"]
            last = sv.get("last_running_after_s")
            note = (note or "") + (
                f"supervisord: {sv.get('running_at_limit')} of {big} RUNNING at the {big_limits['supervisord']} s limit"
                + (f" (the last one after {last:.0f} s)" if last else "")
                + f"; daemon {'alive' if sv.get('daemon_alive') else 'gone'}.")
        res["rows"] += [
            row("7 scale", f"start-up until all {big} RUNNING (peers: until all have exec'ed; limit "
                f"{big_limits['peers']} s)", "s", gb("minder", "startup_s"), gb("supervisord", "startup_s"), note=note,
                peers=pcb("startup_s")),
            row("7 scale", f"start-up of {big} against the C spawn loop, same descriptors (peer cells: the loop)", "s",
                gb("minder", "startup_s"), None, target="≤ 1.2× the best C loop",
                check=(lambda m, o, r: m["median"] <= 1.2 * min(c["median"] for c in clb.values())) if clb else None,
                peers=clb),
            row("7 scale", f"`status`, {big} programs (first call)", "s", gb("minder", "status_first_s"),
                gb("supervisord", "status_first_s"), peers=pcb("status_first_s")),
            row("7 scale", f"`status`, {big} programs (the next 3 calls)", "ms",
                scaled(perb["minder"].get("status_s"), 1000) if "minder" in perb else None, None,
                target="≤ 50 ms", check=lambda m, o, r: m["median"] <= 50),
            row("7 scale", f"daemon RSS, {big} programs (peers: every supervising process)", "MiB",
                fb("minder", "rss_kib", 1 / 1024), fb("supervisord", "rss_kib", 1 / 1024),
                peers=pcb("rss_kib", 1 / 1024), target=rss_target(big)[0], check=rss_target(big)[1]),
            row("7 scale", f"daemon PSS, {big} programs (peers: every supervising process)", "MiB",
                fb("minder", "pss_kib", 1 / 1024), fb("supervisord", "pss_kib", 1 / 1024),
                peers=pcb("pss_kib", 1 / 1024)),
            row("7 scale", f"daemon fds, {big} programs (peers: every supervising process)", "count",
                fb("minder", "fds"), fb("supervisord", "fds"), peers=pcb("fds")),
            row("7 scale", f"shutdown, {big} programs (peers: their own stop-all)", "s", gb("minder", "shutdown_s"),
                gb("supervisord", "shutdown_s"), peers=pcb("shutdown_s")),
        ]
    return res


# -- 8. shutdown ---------------------------------------------------------------------------


def shutdown(ctx):
    """SIGTERM to the daemon with N running programs, until it and every child are gone."""
    n = ctx.p(100, 50)
    reps = ctx.p(3, 1)
    progs = [Program("p", SLEEP, numprocs=n)]
    res = {"params": {"programs": n, "repetitions": reps, "how": "SIGTERM to the daemon"}}
    times = {k: [] for k in ctx.kinds}
    for rep in range(reps):
        for kind in ctx.kinds:
            d = ctx.daemon(kind, progs, tag="sd")
            d.start()
            if d.wait_all_running(n, 120) is None:
                raise RuntimeError(f"{kind}: not all {n} programs RUNNING")
            settle([d])
            pids = d.child_pids()
            t0 = time.monotonic()
            os.kill(d.pid, signal.SIGTERM)
            if wait_exit(d.popen, 120):
                t_exit = time.monotonic()
                # Both daemons reap every child before they exit; if one had not, poll.
                done = t_exit if all_gone(pids) else wait_until(lambda: all_gone(pids), 60)
            else:
                done = None
            times[kind].append(done - t0 if done else None)
            d.terminate()
            ctx.log(f"shutdown {n} {kind} #{rep + 1}: {times[kind][-1]}")
    for k in times:
        res[k] = {"times_s": times[k], "summary": summary(times[k])}

    def peer(kind):
        """Each peer's own "stop everything": SIGTERM to circusd, `pm2 kill`,
        `s6-svscanctl -t`, SIGHUP to runsvdir; until every supervising process and child is gone."""
        ts = []
        for rep in range(reps):
            d = ctx.daemon(kind, progs, tag="sd")
            d.start()
            if d.wait_all_running(n, 120) is None:
                raise RuntimeError(f"{kind}: not all {n} programs running")
            settle([d])
            pids = d.child_pids() + d.supervising_pids()
            t0 = time.monotonic()
            stopper = d.signal_shutdown() if hasattr(d, "signal_shutdown") else os.kill(d.pid, signal.SIGTERM)
            done = wait_until(lambda: all_gone(pids), 120, poll=0.001)
            ts.append(done - t0 if done else None)
            if stopper is not None:
                wait_exit(stopper, 30)
                forget(stopper)
            d.terminate()
            ctx.log(f"shutdown {n} {kind} #{rep + 1}: {ts[-1]}")
        return {"times_s": ts, "summary": summary(ts)}

    res["peers"] = run_peers(ctx, "shutdown", peer)
    m = scaled(res.get("minder", {}).get("summary"), 1000)
    s = scaled(res.get("supervisord", {}).get("summary"), 1000)
    res["rows"] = [row("8 shutdown", f"SIGTERM until daemon and all {n} children gone (peers: their own stop-all)", "ms",
                       m, s, peers=peer_cells(res["peers"], lambda v: scaled(v["summary"], 1000)))]
    return res


# -- 9. Supervisor's XML-RPC ---------------------------------------------------------------


def _rpc_call(sock_path, method, timeout=120):
    """One XML-RPC call over a fresh unix-socket connection, as supervisorctl makes it: returns
    (seconds from connect to the last byte of the response, the response body). The body is not
    parsed here, so the time is the daemon's share plus the socket's, not Python's XML."""
    body = (f"<?xml version='1.0'?><methodCall><methodName>{method}</methodName>"
            "<params></params></methodCall>").encode()
    head = (b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(str(sock_path))
        s.sendall(head + body)
        buf = bytearray()
        length = None
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
            if length is None and b"\r\n\r\n" in buf:
                headers = bytes(buf[: buf.index(b"\r\n\r\n")]).lower()
                for line in headers.split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = buf.index(b"\r\n\r\n") + 4 + int(line.split(b":")[1])
            if length is not None and len(buf) >= length:
                break
    finally:
        s.close()
    t = time.perf_counter() - t0
    text = bytes(buf).decode(errors="replace")
    if " 200 " not in text.split("\r\n", 1)[0] or "</methodResponse>" not in text:
        raise RuntimeError(f"{method}: unexpected answer {text[:300]!r}")
    return t, text.split("\r\n\r\n", 1)[1]


def xmlrpc(ctx):
    """Supervisor's own clients: the real supervisorctl, and getAllProcessInfo at scale."""
    res = {"params": {}, "rows": []}
    # The real supervisorctl 4.3.0 against each daemon: its wall time is mostly Python's own
    # start-up, the same for both; the daemon's share is the row below.
    n = 10
    runs = {"minder": ctx.p(40, 2), "supervisord": ctx.p(40, 2)}
    progs = [Program("p", SLEEP, numprocs=n)]
    per = {}
    for kind in ctx.kinds:
        d = ctx.daemon(kind, progs, tag="ctl")
        d.start()
        if d.wait_all_running(n, 60) is None:
            raise RuntimeError(f"{kind}: not all {n} programs RUNNING")
        argv = [str(ctx.tools.supervisorctl), "-s", f"unix://{d.sock}", "status"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=d.env)
        if r.stdout.count("RUNNING") != n:
            raise RuntimeError(f"supervisorctl status against {kind}: {r.returncode} {r.stdout[:300]} {r.stderr[:300]}")
        settle([d])
        per[kind] = {"times_s": time_command(argv, runs[kind], 2, ctx.tools.hyperfine, d.env)}
        per[kind]["summary"] = summary(per[kind]["times_s"])
        d.terminate()
        ctx.log(f"xmlrpc supervisorctl status {kind}: median {per[kind]['summary']['median'] * 1000:.1f} ms")
    res["supervisorctl_status"] = per
    m, o = (scaled(per.get(k, {}).get("summary"), 1000) for k in ("minder", "supervisord"))
    res["rows"].append(row("9 XML-RPC", f"the real `supervisorctl status`, {n} programs (wall time)", "ms", m, o,
                           note="supervisorctl 4.3.0 against each daemon; mostly Python's start-up"))
    # getAllProcessInfo with many running programs, timed from connect to the last byte of the
    # answer. Running, because that is where it matters: supervisord's loop then also watches
    # every child's pipes while it writes the answer.
    raise_nofile(6 * 2000 + 1000)
    for count in ctx.p([10, 500, 2000], [10, 100]):
        progs = [Program("p", SLEEP, numprocs=count)]
        calls = ctx.p(30 if count <= 500 else 10, 3)
        per = {}
        for kind in ctx.kinds:
            d = ctx.daemon(kind, progs, tag=f"rpc{count}")
            d.start(ready_timeout=120)
            if d.wait_all_running(count, 300) is None:
                raise RuntimeError(f"{kind}: not all {count} programs RUNNING")
            _, text = _rpc_call(d.sock, "supervisor.getAllProcessInfo")
            got = text.count("<name>statename</name>")
            if got != count:
                raise RuntimeError(f"{kind}: getAllProcessInfo listed {got} of {count} processes")
            settle([d])
            times = [_rpc_call(d.sock, "supervisor.getAllProcessInfo")[0] for _ in range(calls)]
            per[kind] = {"times_s": times, "summary": summary(times), "bytes": len(text)}
            d.terminate()
            ctx.log(f"xmlrpc getAllProcessInfo {count} {kind}: median {per[kind]['summary']['median'] * 1000:.2f} ms")
        res[f"getAllProcessInfo_{count}"] = per
        m, o = (scaled(per.get(k, {}).get("summary"), 1000) for k in ("minder", "supervisord"))
        res["rows"].append(row("9 XML-RPC", f"`getAllProcessInfo`, {count} programs (connect to last byte)", "ms", m, o,
                               target="≥ 20× faster" if count >= 500 else None,
                               check=(lambda m, o, r: r >= 20) if count >= 500 else None))
    return res


# -- 10. the web page ----------------------------------------------------------------------


def webpage(ctx):
    """minderd's web page in headless Chromium: first paint and event-to-screen latency."""
    import re
    from .daemons import Minder

    if not (shutil_which("chromium") and shutil_which("chromedriver")):
        raise RuntimeError("chromium and chromedriver are needed (apt-get install -y chromium chromium-driver)")
    script = Path(__file__).resolve().parents[2] / "tests" / "e2e" / "web_browser.py"
    runs = ctx.p(5, 1)

    class WebMinder(Minder):
        """minderd with a password-protected TCP listener beside its socket, as the page's
        users run it."""

        def config_text(self):
            return ('[daemon.credentials."tcp://127.0.0.1:0"]\nusername = "admin"\npassword = "bench-pw"\n'
                    + super().config_text())

        def daemon_argv(self):
            return super().daemon_argv() + ["--listen", "tcp://127.0.0.1:0"]

    fcp, median, worst = [], [], []
    for i in range(runs):
        d = WebMinder(ctx.tools, ctx.root, [], tag=f"web{i}")
        (d.dir / "talk.sh").write_text('i=0\nwhile true; do i=$((i+1)); echo "line $i"; sleep 0.2; done\n')
        d.programs = [Program("ping", SLEEP), Program("talk", f"sh {d.dir / 'talk.sh'}")]
        d.start()
        if d.wait_all_running(2, 60) is None:
            raise RuntimeError("ping and talk did not start")
        addr = None
        deadline = time.monotonic() + 10
        while addr is None and time.monotonic() < deadline:
            m = re.search(r"listening at tcp://(\S+)", d.log_path.read_text(errors="replace"))
            addr = m.group(1) if m else time.sleep(0.02)
        r = subprocess.run(["python3", str(script), addr, str(ctx.tools.minder), str(d.sock), str(d.dir), "admin:bench-pw"],
                           capture_output=True, text=True, timeout=300)
        d.terminate()
        if r.returncode != 0 or "OK" not in r.stdout:
            raise RuntimeError(f"the browser run failed:\n{r.stdout}\n{r.stderr[-2000:]}")
        fcp.append(float(re.search(r"first contentful paint: ([\d.]+) ms", r.stdout).group(1)))
        m = re.search(r"event-to-screen latency: median ([\d.]+) ms, max ([\d.]+) ms", r.stdout)
        median.append(float(m.group(1)))
        worst.append(float(m.group(2)))
        ctx.log(f"webpage #{i + 1}: first paint {fcp[-1]:.0f} ms, event-to-screen median {median[-1]} ms, max {worst[-1]} ms")
    note = "headless Chromium; supervisord's page has no live updates to compare (it is reloaded by hand)"
    return {
        "params": {"runs": runs},
        "first_paint_ms": fcp, "event_to_screen_median_ms": median, "event_to_screen_max_ms": worst,
        "rows": [
            row("10 web page", "first contentful paint", "ms", summary(fcp), None, note=note),
            row("10 web page", "event-to-screen latency of a state change (median of 5 per run)", "ms", summary(median), None),
            row("10 web page", "event-to-screen latency of a state change (max of 5 per run)", "ms", summary(worst), None),
        ],
    }


def shutil_which(name):
    import shutil

    return shutil.which(name)


# -- 11. the spawn floor ----------------------------------------------------------------------


def _c_loop(ctx, n, threads, capture=True):
    """bench/spawn.c: seconds to posix_spawn `n` sleeps from `threads` threads (see spawn.c);
    without `capture`, with only the stdin pipe (SPAWN_CAPTURE=0)."""
    sleep = shutil_which("sleep")
    r = subprocess.run([str(ctx.tools.spawn), str(n), str(threads), sleep, "1000000"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "SPAWN_CAPTURE": "1" if capture else "0"})
    if r.returncode != 0:
        raise RuntimeError(f"spawn {n} {threads}: exit {r.returncode}: {r.stderr[:300]}")
    return float(r.stdout.split()[2])


def spawn(ctx):
    """minder's `start all` against a C posix_spawn loop (1 and 2 threads), same programs."""
    if "minder" not in ctx.kinds:
        raise RuntimeError("the spawn floor is measured against minder: run it without --only supervisord")
    sizes = ctx.p([500, 2000], [100])
    reps = ctx.p(5, 1)
    raise_nofile(3 * max(sizes) + 1000)
    res = {"params": {"sizes": sizes, "repetitions": reps, "program": "sleep 1000000",
                      "c_loop": "bench/spawn.c: posix_spawn, 3 CLOEXEC pipes dup2'd to 0-2, own process group"},
           "rows": []}
    best = lambda m, o, r, c: m["median"] / min(x["median"] for x in c) <= 1.2  # noqa: E731
    for n in sizes:
        d = ctx.daemon("minder", [Program("p", SLEEP, numprocs=n, autostart=False)], tag=f"spawn{n}")
        d.start()
        per = {"minder": [], "c1": [], "c2": []}
        for rep in range(reps):  # interleaved: minder, C x1, C x2, minder, ...
            settle([d])
            t, info = _start_all(d, n)
            if not info["all_running"]:
                raise RuntimeError(f"minder: start all of {n}: {info}")
            per["minder"].append(t)
            _stop_all(d)
            settle([d])
            per["c1"].append(_c_loop(ctx, n, 1))
            per["c2"].append(_c_loop(ctx, n, 2))
            ctx.log(f"spawn {n} #{rep + 1}: minder start all {t:.3f} s, C loop {per['c1'][-1]:.3f} s (1 thread), "
                    f"{per['c2'][-1]:.3f} s (2 threads)")
        d.terminate()
        sm = {k: scaled(summary(v), 1000) for k, v in per.items()}
        res[str(n)] = {"times_s": per, "summary_ms": sm}
        c = [sm["c1"], sm["c2"]]
        res["rows"].append(row(
            "11 spawn floor", f"`start all`, {n} programs, vs a C posix_spawn loop (peer cells: the loop; ratio = loop ÷ minder)",
            "ms", sm["minder"], None, target="minder ≤ 1.2× the best C loop",
            check=lambda m, o, r, c=c: best(m, o, r, c),
            peers={"C loop ×1": sm["c1"], "C loop ×2": sm["c2"]}))
    return res


SCENARIOS = {
    "status": status,
    "startstop": startstop,
    "footprint": footprint,
    "capture": capture,
    "respawn": respawn,
    "tailf": tailf,
    "scale": scale,
    "shutdown": shutdown,
    "xmlrpc": xmlrpc,
    "webpage": webpage,
    "spawn": spawn,
}
