"""Everything the benchmark needs before it measures: minder's release binaries (cargo),
Supervisor 4.3.0 in a virtualenv (pip, from PyPI), the C child programs (cc), and a
description of the machine."""

import contextlib
import fcntl
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SUPERVISOR_VERSION = "4.3.0"
SUPERLANCE_VERSION = "2.0.0"
BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent


@dataclass
class Tools:
    minderd: Path
    minder: Path
    supervisord: Path
    supervisorctl: Path
    kid: Path
    hyperfine: str  # "" when not installed


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target").resolve()


def work_dir():
    """Where the benchmark keeps what it builds for itself (venv, kid): under cargo's target
    directory, so `cargo clean` removes it and the work tree stays clean."""
    d = target_dir() / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def build_minder(bin_dir=None, build=True):
    """minder's release binaries: built with cargo (a no-op when up to date) unless `bin_dir`
    names prebuilt ones."""
    if bin_dir:
        d = Path(bin_dir).resolve()
    else:
        d = target_dir() / "release"
        if build:
            log(f"cargo build --release (CARGO_TARGET_DIR={target_dir()})")
            subprocess.run(
                ["cargo", "build", "--release", "--workspace", "--bins"],
                cwd=REPO,
                check=True,
                env={**os.environ, "CARGO_TARGET_DIR": str(target_dir())},
            )
    minderd, minder = d / "minderd", d / "minder"
    for b in (minderd, minder):
        if not os.access(b, os.X_OK):
            sys.exit(f"bench: {b} is missing; build with cargo or pass --bin-dir")
    return minderd, minder


@contextlib.contextmanager
def locked(venv):
    """Holds an exclusive lock on `venv`'s lock file: the tests that need a virtualenv run in
    parallel, and on a fresh machine each would otherwise make it at once, in the same place."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def supervisor_venv(venv=None):
    """A virtualenv with supervisor==4.3.0 from PyPI, made once and reused."""
    venv = Path(venv).resolve() if venv else work_dir() / f"venv-supervisor-{SUPERVISOR_VERSION}"
    with locked(venv):
        return _supervisor_venv(venv)


def _supervisor_venv(venv):
    supervisord = venv / "bin" / "supervisord"
    if supervisord.exists():
        out = subprocess.run([supervisord, "--version"], capture_output=True, text=True)
        if out.stdout.strip() == SUPERVISOR_VERSION:
            return supervisord, venv / "bin" / "supervisorctl"
    make_venv(venv, [f"supervisor=={SUPERVISOR_VERSION}"])
    return supervisord, venv / "bin" / "supervisorctl"


def make_venv(venv, requirements):
    """Makes (or remakes) the virtualenv `venv` and installs `requirements` into it from PyPI."""
    log(f"making a virtualenv at {venv} and installing {' '.join(requirements)} from PyPI")
    r = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(
            f"bench: `{sys.executable} -m venv` failed:\n{r.stderr}\n"
            "On Debian/Ubuntu: apt-get install -y python3-venv"
        )
    subprocess.run(
        [venv / "bin" / "pip", "install", "--disable-pip-version-check", "-q", *requirements],
        check=True,
    )


def superlance_venv(venv=None):
    """A virtualenv with superlance==2.0.0 (Supervisor's event listeners: crashmail, memmon,
    httpok) and supervisor==4.3.0 from PyPI, made once and reused; returns its bin directory.
    The end-to-end tests run these listeners under minderd."""
    venv = Path(venv).resolve() if venv else work_dir() / f"venv-superlance-{SUPERLANCE_VERSION}"
    with locked(venv):
        return _superlance_venv(venv)


def _superlance_venv(venv):
    bin_dir = venv / "bin"
    marker = venv / f".superlance-{SUPERLANCE_VERSION}-supervisor-{SUPERVISOR_VERSION}"
    if marker.exists() and (bin_dir / "crashmail").exists():
        return bin_dir
    make_venv(venv, [f"superlance=={SUPERLANCE_VERSION}", f"supervisor=={SUPERVISOR_VERSION}"])
    marker.touch()
    return bin_dir


def build_kid():
    """bench/kid.c, compiled with the system C compiler (a Rust toolchain needs one to link)."""
    src = BENCH_DIR / "kid.c"
    out = work_dir() / "kid"
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        sys.exit("bench: no C compiler (cc) to build bench/kid.c; apt-get install -y gcc")
    log(f"compiling {src.name}")
    subprocess.run([cc, "-O2", "-o", str(out), str(src)], check=True)
    return out


def prepare(args):
    minderd, minder = build_minder(args.bin_dir, build=not args.no_build)
    supervisord, supervisorctl = supervisor_venv(args.venv)
    kid = build_kid()
    hyperfine = "" if args.no_hyperfine else (shutil.which("hyperfine") or "")
    if not hyperfine and not args.no_hyperfine:
        log("hyperfine is not installed (apt-get install -y hyperfine); timing CLI runs with posix_spawn")
    return Tools(minderd, minder, supervisord, supervisorctl, kid, hyperfine)


def _version(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine(tools):
    """The machine and software the figures were taken on."""
    cpu = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    import resource

    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "os": _os_release(),
        "rustc": _version(["rustc", "--version"]),
        "python": platform.python_version(),
        "supervisor": _version([str(tools.supervisord), "--version"]),
        "minder": _version([str(tools.minder), "--version"]),
        "hyperfine": _version([tools.hyperfine, "--version"]) if tools.hyperfine else None,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE),
        "pid_max": int(Path("/proc/sys/kernel/pid_max").read_text()),
    }


def _os_release():
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None
