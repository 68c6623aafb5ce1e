"""What /proc says about a process: CPU time, context switches, memory, descriptors, children."""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    return text[text.rindex(")") + 2 :].split()


def state(pid):
    """The one-letter state (R, S, Z, ...), or None if there is no such process."""
    f = _stat_fields(pid)
    return f[0] if f else None


def alive(pid):
    """Whether the process exists and has not exited (a zombie has exited)."""
    s = state(pid)
    return s is not None and s not in ("Z", "X")


def ppid(pid):
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def cpu_ticks_seconds(pid):
    """utime + stime of every thread, from /proc/PID/stat (resolution 1/CLK_TCK s)."""
    f = _stat_fields(pid)
    if not f:
        return None
    return (int(f[11]) + int(f[12])) / CLK_TCK


def cpu_ns(pid):
    """Time on CPU of every thread, in ns, from /proc/PID/task/*/schedstat (exact, unlike the
    tick-granular utime+stime). Threads that have ended are not counted."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for t in tasks:
        text = _read(f"/proc/{pid}/task/{t}/schedstat")
        if text:
            total += int(text.split()[0])
    return total


def context_switches(pid):
    """Voluntary + involuntary context switches, summed over /proc/PID/task/*/status."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for t in tasks:
        text = _read(f"/proc/{pid}/task/{t}/status")
        if not text:
            continue
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


def status_kib(pid, key):
    """A kB figure from /proc/PID/status (VmRSS, VmHWM, ...)."""
    text = _read(f"/proc/{pid}/status")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def threads(pid):
    text = _read(f"/proc/{pid}/status")
    for line in (text or "").splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return None


def pss_kib(pid):
    """Proportional set size, from /proc/PID/smaps_rollup."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return None


def children(pid):
    """The pids whose parent is `pid` (this kernel has no /proc/PID/task/*/children)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(name)
            if f and int(f[1]) == pid:
                found.append(int(name))
    return found


def children_of(parents):
    """The pids whose parent is in `parents`, with one pass over /proc (a pass per parent
    costs seconds with thousands of processes)."""
    parents = set(parents)
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            f = _stat_fields(name)
            if f and int(f[1]) in parents and f[0] not in ("Z", "X"):
                found.append(int(name))
    return found


def comm(pid):
    """The command name (/proc/PID/comm), or None."""
    text = _read(f"/proc/{pid}/comm")
    return text.strip() if text else None


def group_footprint(pids):
    """footprint() summed over `pids` (a daemon and its supervising processes), with the count."""
    total = {"rss_kib": 0, "pss_kib": 0, "hwm_kib": 0, "fds": 0, "threads": 0}
    for pid in pids:
        for k, v in footprint(pid).items():
            total[k] += v or 0
    total["processes"] = len(pids)
    return total


def footprint(pid):
    """Memory and descriptors of a daemon, in one dict."""
    return {
        "rss_kib": status_kib(pid, "VmRSS"),
        "pss_kib": pss_kib(pid),
        "hwm_kib": status_kib(pid, "VmHWM"),
        "fds": fd_count(pid),
        "threads": threads(pid),
    }
