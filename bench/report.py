#!/usr/bin/env python3
"""Turns bench/run.sh's raw numbers into its table and chart.

    bench/report.py RESULTS.csv META.txt TABLE.md CHART.svg|""

RESULTS.csv has one row per (size, events, system, metric, value); nothing is
computed elsewhere: every figure in the table comes from that file.
"""
import csv
import sys
from collections import OrderedDict

SYSTEMS = OrderedDict([
    ("recsys", "**recsys** (maintenance_work_mem {mwm})"),
    ("recsys_64MB", "recsys, default 64MB"),
    ("sql", "plain-SQL self-join"),
    ("scipy", "scipy.sparse (compute; load apart)"),
    ("dense", "dense pandas + scikit-learn"),
])


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def fmt_s(x):
    x = num(x)
    if x is None:
        return ""
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def human(n):
    n = float(n)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suf}"
    return f"{n:.0f}"


def main():
    results, meta_path, table_path, chart_path = sys.argv[1:5]
    data = OrderedDict()     # (size, events) -> system -> metric -> value
    with open(results, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["size"], int(row["events"]))
            data.setdefault(key, {}).setdefault(row["system"], {})[row["metric"]] = row["value"]
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(meta_path) if "=" in line)
    mwm = next((p.split("=", 1)[1] for p in meta.get("command", "").split() if p.startswith("BENCH_MWM=")), "1GB")

    lines = []
    lines.append(f"Run of {meta.get('date', '?')} on {meta.get('machine', '?')}, PostgreSQL {meta.get('postgres', '?')}: "
                 f"`{meta.get('command', 'bench/run.sh')}`")
    lines.append("")
    head = ["events (users × items, cells)", "system", "training s", "recsys_train() call, client's wall s",
            "× recsys", "peak memory growth MB",
            "agreement with recsys", "Σdeg² · ns per multiply-add", "recsys_evaluate(10) s",
            "recommend 1 user p50 / p99 ms", "100 users p50 / p99 ms"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for (size, events), systems in data.items():
        if "projected" in systems or size.startswith("core"):
            continue
        r = systems.get("recsys", {})
        log = systems.get("log", {})
        base = num(r.get("train_s"))
        first = True
        for sysname, label in SYSTEMS.items():
            m = systems.get(sysname, {})
            cells = [""] * len(head)
            if first:
                cells[0] = (f"**{size}**: {events:,} ({human(r.get('users', log.get('users', 0)))} × "
                            f"{human(r.get('items', log.get('products', 0)))}, {human(r.get('cells', 0))} cells)")
                first = False
            cells[1] = label.format(mwm=mwm)
            if "skipped" in m:
                cells[2] = f"skipped ({m['skipped']})"
            elif "failed" in m:
                cells[2] = f"failed: {m['failed']}"
            else:
                t = num(m.get("train_s"))
                cells[2] = fmt_s(t)
                if sysname == "recsys" and m.get("runs_s"):
                    cells[2] = f"**{fmt_s(t)}** (runs {', '.join(fmt_s(x) for x in m['runs_s'].split())})"
                if m.get("call_s"):
                    runs = m.get("call_runs_s")
                    cells[3] = fmt_s(m["call_s"]) + (f" (runs {', '.join(fmt_s(x) for x in runs.split())})" if runs else "")
                if sysname == "scipy" and m.get("load_s"):
                    cells[2] += f" (+ load {fmt_s(m['load_s'])})"
                if t is not None and base:
                    cells[4] = f"{t / base:.2f}×" if sysname.startswith("recsys") else f"{t / base:.1f}×"
                if m.get("peak_mb"):
                    cells[5] = m["peak_mb"]
                    pred = num(m.get("predicted_mb"))
                    if sysname == "recsys" and pred:
                        cells[5] += f" (train_memory() {pred:.0f}: {float(m['peak_mb']) / pred:.2f}×"
                        if num(m.get("private_mb")) is not None:
                            cells[5] += f"; private {m['private_mb']}: {float(m['private_mb']) / pred:.2f}×"
                        cells[5] += ")"
                cells[6] = m.get("agreement", "")
            if sysname == "recsys":
                if m.get("floor_madds") and m.get("ns_per_madd"):
                    cells[7] = (f"{human(m['floor_madds'])} · {float(m['ns_per_madd']):.1f} ns "
                                f"(core {fmt_s(m.get('core_s'))} s, read {fmt_s(m.get('read_s'))} s)")
                    if m.get("pass_ns_per_madd"):
                        cells[7] += (f"; the pass alone {fmt_s(m.get('pass_s'))} s, "
                                     f"{float(m['pass_ns_per_madd']):.1f} ns")
                if m.get("evaluate_s") and base:
                    runs = m.get("evaluate_runs_s")
                    runs = f"runs {', '.join(fmt_s(x) for x in runs.split())}; " if runs else ""
                    cells[8] = f"{fmt_s(m['evaluate_s'])} ({runs}{float(m['evaluate_s']) / base:.2f}× training)"
                elif m.get("evaluate_failed"):
                    cells[8] = "failed: " + m["evaluate_failed"]
                if m.get("reco1_p50_ms"):
                    cells[9] = f"{m['reco1_p50_ms']} / {m['reco1_p99_ms']}"
                    cells[10] = f"{m['reco100_p50_ms']} / {m['reco100_p99_ms']}"
                elif m.get("reco_skipped"):
                    cells[9] = "skipped: " + m["reco_skipped"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    measured = [(k, sy) for k, sy in data.items() if "projected" not in sy and not k[0].startswith("core")]
    core = [(k, sy) for k, sy in data.items() if k[0].startswith("core")]
    gen = ", ".join(f"{s} {fmt_s(sy.get('log', {}).get('generate_s'))} s" for (s, _), sy in measured)
    load = ", ".join(f"{s} {sy.get('run', {}).get('loadavg', '?')}" for (s, _), sy in measured)
    lines.append(f"Generating the logs took: {gen}. 1-minute load average when each size started: {load}.")
    versions = {sy: m["version"] for systems in data.values() for sy, m in systems.items() if "version" in m}
    if versions:
        lines.append("Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()) + ".")
    lines += summary(measured)
    lines += core_alone(core)
    lines += projection(data)
    with open(table_path, "w") as f:
        f.write("\n".join(lines) + "\n")

    if chart_path:
        chart(data, chart_path, mwm)


def core_alone(core):
    """The core's own bench (bench/core_bench.cpp) at the largest size."""
    out = []
    for (size, events), systems in core:
        for sysname, m in systems.items():
            what = (f"- The core alone (bench/core_bench.cpp, no PostgreSQL; best of 3 on two threads) on a "
                    f"{events:,}-event log of the generator's shape, user_skew {m.get('user_skew', '?')}")
            if "failed" in m:
                out.append(f"{what}: failed ({m['failed']}).")
                continue
            floor, t, p = num(m.get("floor_madds")), num(m.get("train_s")), num(m.get("pass_s"))
            if not (floor and t and p):
                continue
            out.append(f"{what} (Σdeg² {human(floor)}): train() {fmt_s(t)} s = {1e9 * t / floor:.2f} ns per "
                       f"multiply-add; its similarity pass {fmt_s(p)} s = **{1e9 * p / floor:.2f} ns** per "
                       f"multiply-add (model fingerprint {m.get('fingerprint', '?')}).")
    return out


def summary(measured):
    """The run's findings, each computed from the table's numbers."""
    if not measured:
        return []
    out = ["", "Summary of this run (computed from the table):", ""]
    per = [(size, ev, sy) for (size, ev), sy in measured]
    r = lambda sy, k: num(sy.get("recsys", {}).get(k))  # noqa: E731
    # where the time goes, at the largest size
    size, ev, sy = max(per, key=lambda t: t[1])
    t, rd, core = r(sy, "train_s"), r(sy, "read_s"), r(sy, "core_s")
    if t and rd is not None and core is not None:
        out.append(f"- At {size}, recsys_train() took {fmt_s(t)} s: reading the matrix {fmt_s(rd)} s "
                   f"({100 * rd / t:.0f}%), the C++ core {fmt_s(core)} s ({100 * core / t:.0f}%; the popularity "
                   f"and most neighbour rows are written meanwhile), the last rows and the rest "
                   f"{fmt_s(t - rd - core)} s."
                   + (f" The call as the client saw it (retention, the run log's end row and the commit"
                      f" included): {fmt_s(r(sy, 'call_s'))} s." if r(sy, "call_s") else ""))
    out.append("- The core's ns per multiply-add of the floor Σdeg² (the core's wall time, writing included): "
               + ", ".join(f"{s} {r(y, 'ns_per_madd'):.1f}" for s, _, y in per if r(y, "ns_per_madd")) + ".")
    if any(r(y, "pass_ns_per_madd") for _, _, y in per):
        out.append("- The similarity pass alone (from the matrix built to the last list; the backend's thread "
                   "writes rows meanwhile), ns per multiply-add of Σdeg²: "
                   + ", ".join(f"{s} {r(y, 'pass_ns_per_madd'):.1f} ({fmt_s(r(y, 'pass_s'))} s)"
                               for s, _, y in per if r(y, "pass_ns_per_madd")) + ".")
    for sysname, label in (("sql", "The plain-SQL self-join"), ("scipy", "The scipy.sparse computation"),
                           ("dense", "The dense pandas + scikit-learn pipeline")):
        ratios = [(s, num(y.get(sysname, {}).get("train_s")) / r(y, "train_s"))
                  for s, _, y in per if num(y.get(sysname, {}).get("train_s")) and r(y, "train_s")]
        agree = [f"{s}: {y[sysname]['agreement']}" for s, _, y in per if y.get(sysname, {}).get("agreement")]
        if ratios:
            out.append(f"- {label} took " + ", ".join(f"{x:.1f}× ({s})" for s, x in ratios)
                       + " recsys's training; agreement " + "; ".join(agree) + ".")
    mem = [(s, float(y["recsys"]["peak_mb"]) / r(y, "predicted_mb"))
           for s, _, y in per if y.get("recsys", {}).get("peak_mb") and r(y, "predicted_mb")]
    if mem:
        out.append("- Peak memory growth over recsys.train_memory(): "
                   + ", ".join(f"{s} {x:.2f}×" for s, x in mem) + ".")
    priv = [(s, float(y["recsys"]["private_mb"]) / r(y, "predicted_mb"))
            for s, _, y in per if num(y.get("recsys", {}).get("private_mb")) is not None and r(y, "predicted_mb")]
    if priv:
        out.append("- Peak private memory growth (RssAnon, sampled every 0.5 ms in one more, untimed run) over recsys.train_memory(): "
                   + ", ".join(f"{s} {x:.2f}×" for s, x in priv) + ".")
    d64 = []
    for s, _, y in per:
        m = y.get("recsys_64MB", {})
        if "failed" in m:
            d64.append(f"{s} refused ({m['failed']})")
        elif m.get("train_s"):
            d64.append(f"{s} {fmt_s(m['train_s'])} s, peak {m.get('peak_mb', '?')} MB")
    if d64:
        out.append("- At the default maintenance_work_mem 64MB: " + "; ".join(d64) + ".")
    ev = [(s, r(y, "evaluate_s") / r(y, "train_s")) for s, _, y in per if r(y, "evaluate_s") and r(y, "train_s")]
    if ev:
        out.append("- recsys_evaluate(10) / training: " + ", ".join(f"{s} {x:.2f}×" for s, x in ev) + ".")
    if sy.get("recsys", {}).get("reco1_p50_ms"):
        m = sy["recsys"]
        out.append(f"- recsys_recommend at the {size} model: 1 user p50 {m['reco1_p50_ms']} ms, p99 "
                   f"{m['reco1_p99_ms']} ms; 100 users p50 {m['reco100_p50_ms']} ms, p99 {m['reco100_p99_ms']} ms.")
    return out


def exponent(points):
    """b of the least-squares line through (log events, log value), i.e. the
    growth value ~ events^b over the measured sizes; None below two points."""
    import math
    pts = [(math.log(x), math.log(y)) for x, y in points if y is not None and y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx if sxx else None


def projection(data):
    """The 100M-event projection: each measure scaled linearly in events from
    the largest measured size, the exponent fitted over all sizes beside it,
    and train_memory() at the projected matrix shape (run.sh computed it)."""
    proj = next((sy["projected"] for (s, _), sy in data.items() if "projected" in sy), None)
    measured = [(k, sy) for k, sy in data.items() if "projected" not in sy]
    target = 1e8
    rows = []
    for sysname, metric, label, unit in (
            ("recsys", "call_s", "recsys_train() end to end (the call, client's wall)", "s"),
            ("recsys", "train_s", "recsys_train()'s own `seconds`", "s"),
            ("recsys", "read_s", "&nbsp;&nbsp;reading the matrix (scan + C++ aggregation)", "s"),
            ("recsys", "core_s", "&nbsp;&nbsp;the C++ core (similarities)", "s"),
            ("recsys", "evaluate_s", "recsys_evaluate(10)", "s"),
            ("recsys", "peak_mb", "recsys_train() peak memory growth", "MB"),
            ("scipy", "train_s", "scipy.sparse compute", "s"),
            ("scipy", "peak_mb", "scipy.sparse peak memory growth", "MB"),
            ("recsys", "floor_madds", "the floor, Σdeg²", "multiply-adds")):
        pts = [(ev, num(sy.get(sysname, {}).get(metric))) for (_, ev), sy in measured]
        pts = [(x, y) for x, y in pts if y is not None and y > 0]
        if not pts:
            continue
        x, y = max(pts)
        val = y * target / x

        def show(v):
            return human(v) if unit == "multiply-adds" else (f"{v:.0f}" if v >= 10 else f"{v:.2f}")
        b = exponent(pts)
        rows.append(f"| {label} | {show(y)} {unit} at {human(x)} | {show(val)} {unit} | "
                    + (f"events^{b:.2f}" if b is not None else "") + " |")
    if not rows and not proj:
        return []
    out = ["", "Projected to 100M events (NOT measured): each measure scaled linearly in events from the "
           "largest measured size; the growth fitted over the measured sizes (least squares on log-log) "
           "is shown beside it: below 1, linear scaling over-estimates.", "",
           "| measure | measured | 100M events, linear | fitted growth |", "|---|---|---|---|"]
    out += rows
    if proj:
        out.append(f"| recsys.train_memory() at {human(proj['cells'])} cells, {human(proj['users'])} users, "
                   f"{human(proj['items'])} items (cells and users scaled linearly, products by the generator's rule) "
                   f"| | {proj['predicted_mb']} MB | the documented formula |")
    return out


def chart(data, path, mwm):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams["svg.fonttype"] = "none"      # text stays text: small, diffable SVG
    plt.rcParams["svg.hashsalt"] = "recsys-bench"

    series = [("recsys", f"recsys_train() (maintenance_work_mem {mwm})", "o-", "train_s"),
              ("recsys", "recsys core: similarities only", "o:", "core_s"),
              ("recsys_64MB", "recsys_train() (64MB)", "s--", "train_s"),
              ("sql", "plain-SQL self-join", "^-", "train_s"),
              ("scipy", "scipy.sparse (compute)", "D-", "train_s"),
              ("dense", "dense pandas + scikit-learn", "v-", "train_s")]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for sysname, label, style, metric in series:
        pts = [(ev, num(sy.get(sysname, {}).get(metric))) for (_, ev), sy in data.items()
               if "projected" not in sy]
        pts = [(x, y) for x, y in pts if y is not None and y > 0]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("events in the log")
    ax.set_ylabel("training time, s")
    ax.set_title("Training time against events (bench/run.sh)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path.endswith(".png"):
        fig.savefig(path, dpi=110)
    else:
        fig.savefig(path, format="svg", metadata={"Date": None})


if __name__ == "__main__":
    main()
