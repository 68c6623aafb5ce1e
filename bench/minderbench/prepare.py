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
# The peers (issue 17), pinned so that two runs compare the same software.
CIRCUS_VERSION = "0.19.0"
PM2_VERSION = "7.0.4"
PEERS = ("circus", "pm2", "s6", "runit")
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
    spawn: Path = None  # bench/spawn.c, the C spawn loop
    floor: Path = None  # server/examples/footprint_floor.rs, the per-program memory floor
    # Each peer asked for with --peers: {name: {"bin": Path or None, "version": str}}.
    peers: dict = None


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


def build_floor(bin_dir=None, build=True):
    """server/examples/footprint_floor.rs in release: built with cargo unless `bin_dir` names
    prebuilt binaries (then DIR/examples/footprint_floor, if it is there). None without it."""
    if bin_dir:
        path = Path(bin_dir).resolve() / "examples" / "footprint_floor"
    else:
        path = target_dir() / "release" / "examples" / "footprint_floor"
        if build:
            subprocess.run(
                ["cargo", "build", "--release", "-p", "minderd", "--example", "footprint_floor"],
                cwd=REPO,
                check=True,
                env={**os.environ, "CARGO_TARGET_DIR": str(target_dir())},
            )
    if not os.access(path, os.X_OK):
        log(f"{path} is missing: the footprint floor is not measured")
        return None
    return path


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
    """bench/kid.c: the benchmark's child programs."""
    return build_c("kid")


def build_c(name, extra=()):
    """bench/NAME.c, compiled with the system C compiler (a Rust toolchain needs one to link)."""
    src = BENCH_DIR / f"{name}.c"
    out = work_dir() / name
    if out.exists() and out.stat().st_mtime >= src.stat().st_mtime:
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        sys.exit(f"bench: no C compiler (cc) to build bench/{name}.c; apt-get install -y gcc")
    log(f"compiling {src.name}")
    subprocess.run([cc, "-O2", "-o", str(out), str(src), *extra], check=True)
    return out


def circus_venv():
    """A virtualenv with circus from PyPI (circusd, circusctl), made once and reused."""
    venv = work_dir() / f"venv-circus-{CIRCUS_VERSION}"
    with locked(venv):
        marker = venv / f".circus-{CIRCUS_VERSION}"
        if not (marker.exists() and (venv / "bin" / "circusd").exists()):
            make_venv(venv, [f"circus=={CIRCUS_VERSION}"])
            marker.touch()
    return venv / "bin"


def pm2_prefix():
    """pm2 from npm, installed into its own prefix under the bench directory (never -g)."""
    prefix = work_dir() / f"pm2-{PM2_VERSION}"
    pm2 = prefix / "node_modules" / ".bin" / "pm2"
    with locked(prefix):
        marker = prefix / f".pm2-{PM2_VERSION}"
        if not (marker.exists() and pm2.exists()):
            npm = shutil.which("npm")
            if not npm:
                raise RuntimeError("pm2 needs npm (apt-get install -y npm)")
            log(f"npm install pm2@{PM2_VERSION} into {prefix}")
            prefix.mkdir(parents=True, exist_ok=True)
            subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--silent",
                            f"pm2@{PM2_VERSION}"], check=True)
            marker.touch()
    return pm2


def apt_install(commands, packages):
    """Debian's packages for s6 and runit, installed when a command is missing (as scripts/test
    installs chromium): these are system packages, so apt-get is their ordinary installer."""
    if all(shutil.which(c) for c in commands):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"apt-get install -y {' '.join(packages)}")
    argv = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
    missing = [c for c in commands if not shutil.which(c)]
    if missing:
        raise RuntimeError(f"apt-get installed {' '.join(packages)} but {' '.join(missing)} is still missing")


def dpkg_version(package):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return f"{package} {r.stdout.strip()} (Debian)" if r.returncode == 0 else None


def prepare_peer(name):
    """Installs one peer (once) and returns {"bin": ..., "version": ...}."""
    if name == "circus":
        b = circus_venv()
        return {"bin": b, "version": f"circus {_version([str(b / 'circusd'), '--version'])} (PyPI)"}
    if name == "pm2":
        pm2 = pm2_prefix()
        return {"bin": pm2, "version": f"pm2 {PM2_VERSION} (npm), node {_version(['node', '--version'])}"}
    if name == "s6":
        apt_install(["s6-svscan", "s6-svc", "s6-svstat"], ["s6"])
        return {"bin": Path(shutil.which("s6-svscan")).parent, "version": dpkg_version("s6")}
    if name == "runit":
        apt_install(["runsvdir", "sv"], ["runit"])
        return {"bin": Path(shutil.which("runsvdir")).parent, "version": dpkg_version("runit")}
    raise ValueError(f"unknown peer {name}")


def prepare(args):
    minderd, minder = build_minder(args.bin_dir, build=not args.no_build)
    supervisord, supervisorctl = supervisor_venv(args.venv)
    kid = build_kid()
    spawn = build_c("spawn", ["-pthread"])
    floor = build_floor(args.bin_dir, build=not args.no_build)
    hyperfine = "" if args.no_hyperfine else (shutil.which("hyperfine") or "")
    if not hyperfine and not args.no_hyperfine:
        log("hyperfine is not installed (apt-get install -y hyperfine); timing CLI runs with posix_spawn")
    peers = {}
    for name in args.peers:
        try:
            peers[name] = prepare_peer(name)
            log(f"peer {name}: {peers[name]['version']}")
        except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
            # The run goes on without it; the table says why in the peer's column.
            log(f"peer {name} could not be installed: {e}")
            peers[name] = {"bin": None, "version": None, "error": str(e)}
    return Tools(minderd, minder, supervisord, supervisorctl, kid, hyperfine, spawn=spawn, floor=floor, peers=peers)


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
        "peers": {k: v.get("version") or f"not installed: {v.get('error')}" for k, v in (tools.peers or {}).items()},
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
