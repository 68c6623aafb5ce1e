"""The results table, as text for the terminal and as Markdown for docs/BENCHMARKS.md."""


def num(v, unit=""):
    if v is None:
        return "—"
    if unit in ("count", "bytes") or (isinstance(v, int) and not isinstance(v, bool)):
        return f"{v:,.0f}"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a == 0:
        return "0"
    return f"{v:.3f}"


def cell(s, unit, key="median"):
    """`median [min–max]`, or the one value of a single measurement."""
    if not s:
        return "—"
    if s["n"] == 1:
        return num(s[key], unit)
    if key == "p99":
        return f"{num(s['p99'], unit)} (max {num(s['max'], unit)})"
    return f"{num(s[key], unit)} [{num(s['min'], unit)}–{num(s['max'], unit)}]"


def ratio(r):
    if r["ratio"] is None:
        return "—"
    if r["better"] == "higher":
        return f"{r['ratio'] * 100:.0f}% of sv" if r["unit"] != "%" else f"{r['ratio']:.1f}×"
    v = r["ratio"]
    return f"{v:,.0f}×" if v >= 100 else (f"{v:.1f}×" if v >= 10 else f"{v:.2f}×")


def met(r):
    return {True: "yes", False: "NO", None: ""}[r["met"]] if r["target"] else ""


def peer_columns(rows):
    """The peers' columns, in the order they first appear."""
    cols = []
    for r in rows:
        for k in r.get("peers") or {}:
            if k not in cols:
                cols.append(k)
    return cols


def peer_cell(c, unit, key):
    """A peer's figure with its ratio to minder (`value (ratio×)`), or its "n/a: why"."""
    if c is None:
        return ""
    if "na" in c:
        return c["na"]
    text = cell(c["summary"], unit, key)
    if c.get("ratio") is not None:
        v = c["ratio"]
        text += f" ({v:,.0f}×)" if v >= 100 else (f" ({v:.1f}×)" if v >= 10 else f" ({v:.2f}×)")
    return text


def _cells(r, peers=()):
    key = r["ratio_from"] if r["ratio_from"] in ("p99",) else "median"
    return [
        r["scenario"],
        f"{r['metric']} ({r['unit']})",
        cell(r["minder"], r["unit"], key),
        cell(r["supervisord"], r["unit"], key),
        ratio(r),
        *(peer_cell((r.get("peers") or {}).get(k), r["unit"], key) for k in peers),
        r["target"] or "",
        met(r),
    ]


HEADER = ["scenario", "metric (unit)", "minder", "supervisord", "ratio", "target", "met"]


def header(peers):
    return [*HEADER[:5], *peers, *HEADER[5:]]


def text_table(rows):
    peers = peer_columns(rows)
    head = header(peers)
    table = [head] + [_cells(r, peers) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    widths[1] = min(widths[1], 70)
    for i in range(5, 5 + len(peers)):
        widths[i] = min(widths[i], 24)  # an "n/a: why" is long: it overflows its column
    lines = []
    for i, row in enumerate(table):
        lines.append("  ".join(c.ljust(w) if len(c) <= w else c for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  note ({r['scenario']}): {r['note']}" for r in rows if r.get("note")]
    return "\n".join(["", *lines, *notes, ""])


def markdown(results):
    m = results["machine"]
    rows = results["rows"]
    peers = peer_columns(rows)
    head = header(peers)
    versions = "; ".join(f"{k}: {v}" for k, v in (m.get("peers") or {}).items())
    out = [
        f"Run: {results['mode']}, {results['started']}, {results.get('seconds', 0):.0f} s. "
        f"Machine: {m['cpu_model']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}; "
        f"{m['rustc']}; Python {m['python']}; supervisord {m['supervisor']}."
        + (f" Peers: {versions}." if versions else ""),
        "",
        "Cells are median [min–max] over the repetitions (p99 rows: p99 (max)). Ratio: how many "
        "times faster or smaller minder is (supervisord ÷ minder), or for throughput minder ÷ supervisord. "
        "A peer's cell carries its own ratio the same way (peer ÷ minder).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(r, peers)) + " |")
    notes = [f"- {r['scenario']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        out += ["", *notes]
    for name, err in results.get("errors", {}).items():
        out.append(f"- {name}: FAILED: {err}")
    loads = [f"{n} {s['load_before']:.1f}→{s['load_after']:.1f}" for n, s in results["scenarios"].items()
             if "load_before" in s]
    if loads:
        out += ["", "1-minute load average as each scenario began and ended: " + ", ".join(loads) + "."]
    return "\n".join(out)
