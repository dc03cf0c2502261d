#!/usr/bin/env python3
"""Turns bench/run's key-value results into the results table.

    report.py RESULTS_DIR OUT.md

Reads RESULTS_DIR/<part>.kv (serve, ingest, scale, idle, million; each written
by the latest run of that part, with its own meta.* keys), prints the table
and writes OUT.md. Everything in OUT.md after the ANALYSIS_MARKER line is
kept as it was: that is where findings and profiles are written by hand.
"""
import math
import os
import sys

PARTS = ["serve", "ingest", "scale", "idle", "million"]
ANALYSIS_MARKER = "<!-- Everything below this line is kept by bench/run. -->"


def load(results_dir):
    kv = {}
    meta = {}
    for part in PARTS:
        path = os.path.join(results_dir, f"{part}.kv")
        if not os.path.exists(path):
            continue
        meta[part] = {}
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if not line or " " not in line:
                    continue
                key, value = line.split(" ", 1)
                if key.startswith("meta."):
                    meta[part][key[5:]] = value
                else:
                    kv[key] = value
    return kv, meta


def num(kv, key):
    try:
        v = float(kv[key])
        return None if math.isnan(v) or v < 0 else v
    except (KeyError, ValueError):
        return None


def fmt(v, unit="", digits=3):
    if v is None:
        return "—"
    if abs(v) >= 1000:
        text = f"{v:,.0f}"
    else:
        text = f"{v:.{digits}g}"
    return f"{text}{unit}"


# The keys of the scale part's interleaved rounds of walk and index.
WALK_ROUNDS = ("scale.round1.walk_s", "scale.round2.walk_s", "scale.round3.walk_s")
INDEX_ROUNDS = ("scale.round1.ready_s", "scale.round2.ready_s", "scale.round3.ready_s")


def median(values):
    """The median of the values that were measured, or None."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    return present[mid] if len(present) % 2 else (present[mid - 1] + present[mid]) / 2


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def rows(kv):
    """(target, measured text, value, limit, sense, part) per target."""
    out = []

    def add(part, what, measured, value, limit, sense):
        out.append((part, what, measured, value, limit, sense))

    for size, label in (("small", "10"), ("large", "1,000")):
        c, n = f"serve.{size}.ckptd", f"serve.{size}.nginx"
        r = ratio(num(kv, c + ".rps"), num(kv, n + ".rps"))
        add("serve", f"artifacts GET, {label} checkpoints: req/s ≥ 0.9× nginx",
            f"{fmt(num(kv, c + '.rps'))} vs {fmt(num(kv, n + '.rps'))} req/s = {fmt(r)}×",
            r, 0.9, ">=")
        r = ratio(num(kv, c + ".p99_ms"), num(kv, n + ".p99_ms"))
        add("serve", f"artifacts GET, {label} checkpoints: p99 ≤ 2× nginx",
            f"{fmt(num(kv, c + '.p99_ms'))} vs {fmt(num(kv, n + '.p99_ms'))} ms = {fmt(r)}×",
            r, 2.0, "<=")
    for size, label in (("small", "10"), ("large", "1,000")):
        c = f"serve.{size}.ckptd"
        r = ratio(num(kv, c + "_304.rps"), num(kv, c + ".rps"))
        add("serve", f"304 (If-None-Match), {label} checkpoints: ≥ full 200s",
            f"{fmt(num(kv, c + '_304.rps'))} vs {fmt(num(kv, c + '.rps'))} req/s = {fmt(r)}×",
            r, 1.0, ">=")
    r = ratio(num(kv, "serve.small.ckptd_429.rps"), num(kv, "serve.small.ckptd_304.rps"))
    add("serve", "429 flood: ≥ 304s",
        f"{fmt(num(kv, 'serve.small.ckptd_429.rps'))} vs "
        f"{fmt(num(kv, 'serve.small.ckptd_304.rps'))} req/s = {fmt(r)}×", r, 1.0, ">=")
    for variant, label in (("hf", "HF trainer_state.json written last"),
                           ("rename", "folder renamed into place")):
        p = f"ingest.{variant}"
        add("ingest", f"ingest p99 ≤ 10 ms ({label})",
            f"p50 {fmt(num(kv, p + '.p50_ms'))} / p99 {fmt(num(kv, p + '.p99_ms'))} / "
            f"max {fmt(num(kv, p + '.max_ms'))} ms", num(kv, p + ".p99_ms"), 10.0, "<=")
    # The walk and the index from empty ran in interleaved rounds: medians.
    walks = [num(kv, k) for k in WALK_ROUNDS]
    indexes = [num(kv, k) for k in INDEX_ROUNDS]
    walk, index = median(walks), median(indexes)
    r = ratio(index, walk)
    rounds = ", ".join(f"{fmt(i)}/{fmt(w)}" for i, w in zip(indexes, walks)
                       if i is not None and w is not None)
    add("scale", "index 100k from empty ≤ 1.5× stat walk",
        f"medians {fmt(index)} s vs {fmt(walk)} s = {fmt(r)}× (rounds, index/walk: {rounds} s)",
        r, 1.5, "<=")
    r = ratio(num(kv, "scale.reconcile.ready_s"), walk)
    add("scale", "restart + reconcile 100k ≤ 1.5× stat walk",
        f"{fmt(num(kv, 'scale.reconcile.ready_s'))} s vs {fmt(walk)} s = {fmt(r)}×", r, 1.5, "<=")
    add("scale", "RSS after indexing 100k ≤ 64 MB",
        f"{fmt(num(kv, 'scale.index.rss_mb'))} MB", num(kv, "scale.index.rss_mb"), 64, "<=")
    add("idle", "RSS idle at 10k ≤ 30 MB",
        f"{fmt(num(kv, 'idle.rss10k_idle_mb'))} MB", num(kv, "idle.rss10k_idle_mb"), 30, "<=")
    add("idle", "idle CPU, 100k, inotify ≤ 0.1 s/min",
        f"{fmt(num(kv, 'idle.inotify.cpu_s_per_min'))} s/min",
        num(kv, "idle.inotify.cpu_s_per_min"), 0.1, "<=")
    return out


def verdict(value, limit, sense):
    if value is None:
        return "not measured"
    ok = value >= limit if sense == ">=" else value <= limit
    return "MET" if ok else "**NOT MET**"


def details(kv, meta):
    lines = []

    def row(*cells):
        lines.append("| " + " | ".join(cells) + " |")

    if "serve" in meta:
        lines += ["", "### 1. Serving (wrk, keep-alive, "
                  f"{meta['serve'].get('wrk', '')})", "",
                  "| case | req/s | p50 ms | p99 ms | max ms | bytes/resp | server CPU µs/req "
                  "| other procs % | irq+softirq % | runs (req/s) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for case in ("serve.small.ckptd", "serve.small.nginx", "serve.small.ckptd_304",
                     "serve.large.ckptd", "serve.large.nginx", "serve.large.ckptd_304",
                     "serve.small.ckptd_429"):
            if case + ".rps" not in kv:
                continue
            dist = " (disturbed)" if kv.get(case + ".disturbed") == "1" else ""
            row(case + dist, fmt(num(kv, case + ".rps")), fmt(num(kv, case + ".p50_ms")),
                fmt(num(kv, case + ".p99_ms")), fmt(num(kv, case + ".max_ms")),
                fmt(num(kv, case + ".bytes_per_resp")),
                fmt(num(kv, case + ".server_cpu_us_per_req")),
                fmt(num(kv, case + ".foreign_pct"), digits=2),
                fmt(num(kv, case + ".softirq_pct"), digits=2), kv.get(case + ".all_rps", ""))
        lines.append("")
        lines.append(f"Bodies: 10 checkpoints = {kv.get('serve.small.body_bytes', '?')} B, "
                     f"1,000 checkpoints = {kv.get('serve.large.body_bytes', '?')} B (identity; "
                     "nginx serves the very same bytes from a file). 429 flood: "
                     f"{fmt(100 * (num(kv, 'serve.small.ckptd_429.non2xx3xx_share') or 0))}% "
                     "of responses were 429.")
    if "ingest" in meta:
        lines += ["", "### 2. Ingest latency (completing operation → `checkpoint.created` read "
                  "from the SSE stream)", "",
                  "| case | n | p50 ms | p90 ms | p99 ms | max ms | first 100 p50 | last 100 p50 "
                  "| timeouts |", "|---|---|---|---|---|---|---|---|---|"]
        for case in ("ingest.hf", "ingest.rename", "floor.rename", "floor.close_write"):
            if case + ".n" not in kv:
                continue
            row(case, kv.get(case + ".n", ""), fmt(num(kv, case + ".p50_ms")),
                fmt(num(kv, case + ".p90_ms")), fmt(num(kv, case + ".p99_ms")),
                fmt(num(kv, case + ".max_ms")), fmt(num(kv, case + ".first100_p50_ms")),
                fmt(num(kv, case + ".last100_p50_ms")), kv.get(case + ".timeouts", "—"))
        lines.append("")
        lines.append(f"Settle time: {kv.get('ingest.settle_time_s', '?')} s (the default); "
                     "both signals are definitive, so no settle wait applies. "
                     "`floor.*`: a bare inotify watch (Python ctypes) timing the same rename and "
                     "write+close on the same filesystem.")
    if "scale" in meta:
        lines += ["", "### 3. Scale: 100,000 checkpoints (1,000 jobs × 100), inotify", "",
                  "| measure | value |", "|---|---|"]
        for key, label, unit in (
                ("scale.checkpoints", "checkpoints generated", ""),
                ("scale.gen_s", "generation time", " s"),
                ("scale.find_cold_s", "`find DIR -printf ''`, first run", " s"),
                ("scale.find_warm_s", "`find DIR -printf ''`, second (warm) run", " s"),
                ("scale.find_stat_warm_s", "`find DIR -printf '%s'` (lstat of every entry), warm",
                 " s"),
                ("scale.read_floor_s", "`find DIR -name trainer_state.json -print0 | xargs -0 cat`"
                 " (walk + read each completion file), warm", " s"),
                *((f"scale.round{n}.{key}", f"round {n}: {label}", " s") for n in (1, 2, 3)
                  for key, label in (("walk_s", "`find DIR -printf ''`, warm"),
                                     ("ready_s", "ckptd index from empty → READY=1"),
                                     ("cpu_s", "… ckptd CPU time (user+sys) for it"))),
                ("scale.index.ready_s", "with the artifacts probe: index from empty → /readyz 200",
                 " s"),
                ("scale.index.cpu_s", "… ckptd CPU time (user+sys) for it", " s"),
                ("scale.index.foreign_pct", "… other processes' share of the machine meanwhile",
                 " %"),
                ("scale.index.rss_mb", "RSS right after indexing", " MB"),
                ("scale.index.hwm_mb", "peak RSS (VmHWM) while indexing", " MB"),
                ("scale.db_mb", "RocksDB size (du of --db)", " MB"),
                ("scale.index.probe_p50_ms",
                 "artifacts GET of the first job indexed, while the others index: p50", " ms"),
                ("scale.index.probe_p99_ms", "… p99", " ms"),
                ("scale.index.probe_max_ms", "… max", " ms"),
                ("scale.index.probes", "… requests (new connection each)", ""),
                ("scale.index.probe_200", "… of which 200", ""),
                ("scale.stop_s", "SIGTERM → exit", " s"),
                ("scale.reconcile.ready_s", "restart → READY=1 (reconcile)", " s"),
                ("scale.reconcile.cpu_s", "… ckptd CPU time for it", " s"),
                ("scale.reconcile.rss_mb", "RSS right after reconcile", " MB")):
            if key in kv:
                row(label, fmt(num(kv, key), unit) if num(kv, key) is not None else kv[key])
    if "idle" in meta:
        lines += ["", "### 4. Idle cost (60 s, nothing happening)", "",
                  "| measure | value |", "|---|---|"]
        for key, label, unit in (
                ("idle.inotify.cpu_s_per_min", "100k, inotify: CPU (utime+stime) per minute",
                 " s"),
                ("idle.inotify.sched_s_per_min", "… same from schedstat (ns precision)", " s"),
                ("idle.inotify.rss_mb", "… RSS at the end", " MB"),
                ("idle.poll.ready_s", "100k, poll (10 s interval): restart → ready", " s"),
                ("idle.poll.cpu_s_per_min", "100k, poll: CPU per minute", " s"),
                ("idle.poll.sched_s_per_min", "… same from schedstat", " s"),
                ("idle.poll.rss_mb", "… RSS at the end", " MB"),
                ("idle.rss10k_ready_mb", "10k, inotify: RSS right after indexing", " MB"),
                ("idle.rss10k_idle_mb", "10k, inotify: RSS after 10 s idle", " MB")):
            if key in kv:
                row(label, fmt(num(kv, key), unit))
    if "million" in meta:
        n = kv.get("million.checkpoints", "?")
        lines += ["", f"### 3b. Polling mode at scale: {n} checkpoints (asked for "
                  f"{kv.get('million.asked', '?')})", "", "| measure | value |", "|---|---|"]
        for key, label, unit in (
                ("million.checkpoints", "checkpoints generated", ""),
                ("million.gen_s", "generation time (trainer_state.json only)", " s"),
                ("million.find_warm_s", "`find DIR -printf ''`, warm", " s"),
                ("million.index.ready_s", "ckptd --watch-mode poll, index from empty", " s"),
                ("million.index.cpu_s", "… ckptd CPU time", " s"),
                ("million.index.rss_mb", "RSS right after indexing", " MB"),
                ("million.index.hwm_mb", "peak RSS (VmHWM)", " MB"),
                ("million.db_mb", "RocksDB size", " MB")):
            if key in kv:
                row(label, fmt(num(kv, key), unit))
        if kv.get("million.note"):
            lines += ["", kv["million.note"]]
    return lines


def main():
    results_dir, out_path = sys.argv[1], sys.argv[2]
    kv, meta = load(results_dir)
    table = ["| part | target | measured | verdict |", "|---|---|---|---|"]
    for part, what, measured, value, limit, sense in rows(kv):
        if part not in meta:
            continue
        table.append(f"| {part} | {what} | {measured} | {verdict(value, limit, sense)} |")

    head = ["# ckptd benchmark results", "",
            "Written by `bench/run` (usage in its header). Ratios compare numbers taken in the "
            "same run of a part, on the same machine; absolute numbers are not comparable across "
            "runs or machines.", ""]
    head += ["| part | date | command | machine | load avg at start | took | commit |",
             "|---|---|---|---|---|---|---|"]
    for part in PARTS:
        m = meta.get(part)
        if m:
            head.append(f"| {part} | {m.get('date', '?')} | `{m.get('command', '?')}` | "
                        f"{m.get('nproc', '?')} cores, kernel {m.get('kernel', '?')} | "
                        f"{m.get('loadavg_start', '?')} | {m.get('duration_s', '?')} s | "
                        f"{m.get('commit', '?')} |")
    body = head + ["", "## Targets", ""] + table + ["", "## Details"] + details(kv, meta)
    text = "\n".join(body) + "\n"
    print(text)

    kept = ""
    if os.path.exists(out_path):
        with open(out_path) as f:
            old = f.read()
        at = old.find(ANALYSIS_MARKER)
        if at >= 0:
            kept = old[at + len(ANALYSIS_MARKER):]
    with open(out_path, "w") as f:
        f.write(text + "\n" + ANALYSIS_MARKER + (kept if kept else "\n"))


if __name__ == "__main__":
    main()
