#!/usr/bin/env python3
"""minder's benchmark: minder vs Supervisor 4.3.0 and the peers (circus, pm2, s6, runit),
same machine, same run, same scenarios.

    python3 bench/run.py                  # everything, with every peer; builds what it needs
    python3 bench/run.py --quick          # a short smoke run (< 1 min), no peers
    python3 bench/run.py --quick --peers s6,runit   # a smoke run with these peers
    python3 bench/run.py status capture   # only these scenarios
    python3 bench/run.py --list           # the scenarios

It builds minder's release binaries with cargo (honouring CARGO_TARGET_DIR), installs
supervisor==4.3.0 from PyPI into a virtualenv under the target directory, compiles bench/kid.c
and bench/spawn.c, installs the peers asked for (circus from PyPI and pm2 from npm under the
target directory, Debian's s6 and runit with apt-get), then runs each scenario against both daemons, each in a temp directory on its own unix socket.
It prints a table (median [min–max], ratio, target met?) and writes the figures as JSON (and
the table as Markdown) to bench/results/. Standard library only. See docs/BENCHMARKS.md.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minderbench import daemons, peers, prepare, report  # noqa: E402
from minderbench.scenarios import SCENARIOS, Ctx  # noqa: E402


def loadavg():
    """The 1-minute load average: the benchmark itself adds up to ~1-2 while it runs."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"run only these: {', '.join(SCENARIOS)}")
    ap.add_argument("--quick", action="store_true", help="a short smoke run: small sizes, one repetition")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("--only", choices=list(daemons.KINDS), help="run one daemon only (no ratios)")
    ap.add_argument("--peers", metavar="LIST",
                    help=f"comma-separated peers to run beside them ({','.join(prepare.PEERS)}), or 'none'; "
                         "default: all in a full run, none with --quick")
    ap.add_argument("--out", type=Path, help="the JSON results file (default bench/results/{full,quick,partial}.json)")
    ap.add_argument("--bin-dir", help="use the minderd and minder binaries in this directory; do not build")
    ap.add_argument("--no-build", action="store_true", help="do not run cargo; use the target directory's binaries")
    ap.add_argument("--venv", help="the virtualenv for supervisor (default: under the cargo target directory)")
    ap.add_argument("--no-hyperfine", action="store_true", help="time CLI runs with posix_spawn even if hyperfine is installed")
    ap.add_argument("--tmpdir", help="where the daemons' temp directories go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (configs, daemon logs) for inspection")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the 1-minute load average to fall below 1 (other work on the machine skews every figure)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.peers is None:
        args.peers = [] if args.quick else list(prepare.PEERS)
    elif args.peers in ("", "none"):
        args.peers = []
    else:
        args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        bad = [p for p in args.peers if p not in prepare.PEERS]
        if bad:
            ap.error(f"unknown peer {', '.join(bad)}; choose from {', '.join(prepare.PEERS)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.list:
        for name, fn in SCENARIOS.items():
            print(f"{name:10} {fn.__doc__.strip().splitlines()[0]}")
        return 0

    # SIGTERM and SIGHUP end the run as Ctrl-C does: through the finally below.
    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    # Even when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, interrupted)
    daemons.become_subreaper()

    started = time.monotonic()
    tools = prepare.prepare(args)
    kinds = [args.only] if args.only else list(daemons.KINDS)
    names = args.scenarios or list(SCENARIOS)
    mode = "quick" if args.quick else "full"
    if args.scenarios or args.only:
        mode += "-partial"
    out = args.out or prepare.BENCH_DIR / "results" / f"{mode}.json"

    root = Path(tempfile.mkdtemp(prefix="minder-bench-", dir=args.tmpdir))
    installed = [p for p in args.peers if tools.peers[p].get("bin")]
    ctx = Ctx(tools, root, args.quick, kinds, prepare.log, installed)
    if args.quick and not args.peers:
        prepare.log("--quick runs no peers (installing them takes minutes the first time): add --peers circus,pm2,s6,runit")
    results = {
        "mode": mode,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": prepare.machine(tools),
        "scenarios": {},
        "errors": {},
    }
    prepare.log(f"temp dir {root}; scenarios: {' '.join(names)}")
    if args.wait_quiet:
        deadline = time.monotonic() + args.wait_quiet
        while loadavg() >= 1.0 and time.monotonic() < deadline:
            time.sleep(5)
    if loadavg() >= 1.0:
        prepare.log(f"warning: the machine is busy (load average {loadavg():.1f}); the figures will be noisy")
    code = 0
    try:
        for name in names:
            t0 = time.monotonic()
            load0 = loadavg()
            prepare.log(f"--- {name}: {SCENARIOS[name].__doc__.strip().splitlines()[0]}")
            try:
                res = SCENARIOS[name](ctx)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one broken scenario does not lose the others' figures
                traceback.print_exc()
                results["errors"][name] = f"{type(e).__name__}: {e}"
                code = 1
                daemons.cleanup()
                continue
            res["seconds"] = time.monotonic() - t0
            res["load_before"], res["load_after"] = load0, loadavg()
            # Every peer asked for has a cell in every row: its figure, or why there is none.
            for r in res.get("rows", []):
                r.setdefault("peers", {})
                for p in args.peers:
                    if p not in r["peers"]:
                        why = peers.cannot(p, name) if p in installed else f"not installed: {tools.peers[p].get('error')}"
                        r["peers"][p] = {"na": why or "n/a"}
            results["scenarios"][name] = res
            prepare.log(f"--- {name} took {res['seconds']:.0f} s")
    except KeyboardInterrupt:
        prepare.log("interrupted: stopping every daemon this run started")
        code = 130
    finally:
        daemons.cleanup()
        if args.keep:
            prepare.log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    results["seconds"] = time.monotonic() - started
    rows = [r for s in results["scenarios"].values() for r in s.get("rows", [])]
    results["rows"] = rows
    print(report.text_table(rows))
    for name, err in results["errors"].items():
        print(f"{name}: FAILED: {err}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(report.markdown(results) + "\n")
    prepare.log(f"wrote {out} and {out.with_suffix('.md')} ({results['seconds']:.0f} s in all)")
    return code


if __name__ == "__main__":
    sys.exit(main())
