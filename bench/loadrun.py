#!/usr/bin/env python3
"""Runs wrk against one or more servers, interleaved, and prints key-value lines.

    loadrun.py --case serve.small --target 'ckptd|URL|PID,PID|ETAG' --target 'nginx|URL|PIDS|'
               [--duration 6] [--warmup 1] [--rounds 2] [--retries 1] [--max-foreign 0.10]
               [--connections 64] [--threads N] [--script bench/wrk.lua]

Each round runs every target once, in order, so slow drifts of the machine hit
all targets alike. A run is "disturbed" when CPU time used by processes other
than wrk and the target's own PIDs exceeds --max-foreign of the machine
(from /proc/stat, minus wrk's rusage, minus the targets' /proc/PID/stat); a
disturbed run is repeated at once, at most --retries times per target and
--retry-budget times in all. Interrupt and softirq time (the loopback TCP work
of the benchmark itself) is reported apart, not counted as disturbance. Per
target the best undisturbed round (highest req/s) is reported; if every round
was disturbed, the least disturbed one, flagged disturbed=1.

Before each run it waits (at most --quiet-wait s, --quiet-budget s in all) for a
quiet half second.
--quiet-only does only that (for other parts of bench/run).

Output, one "key value" per line, keys prefixed with CASE.NAME.: rps, p50_ms,
p90_ms, p99_ms, max_ms, bytes_per_resp, non2xx3xx_share, socket_errors,
server_cpu_us_per_req, foreign_pct, softirq_pct, disturbed, all_rps.
"""
import argparse
import os
import re
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1


def busy_ticks():
    """CPU ticks spent by tasks (user, nice, system, steal). Interrupt and
    softirq time is left out: on loopback it is mostly the benchmark's own TCP
    traffic, and the kernel accounts it to no process (see irq_ticks)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + steal


def irq_ticks():
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[6]) + int(fields[7])


def pid_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return 0
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])  # utime, stime (all threads)


def wait_quiet(max_share, limit_s, pids=()):
    """Waits (at most limit_s) for half a second in which processes other than
    `pids` use at most max_share of the machine. Returns that share."""
    end = time.monotonic() + limit_s
    while True:
        b0, p0 = busy_ticks(), sum(pid_ticks(p) for p in pids)
        time.sleep(0.5)
        b1, p1 = busy_ticks(), sum(pid_ticks(p) for p in pids)
        share = max(0, (b1 - b0) - (p1 - p0)) / CLK_TCK / NPROC / 0.5
        if share <= max_share or time.monotonic() >= end:
            return share


def run_wrk(args, url, pids, etag, duration):
    env = dict(os.environ)
    env["WRK_IF_NONE_MATCH"] = etag or ""
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--latency",
           "--timeout", "5s", "-s", args.script, url]
    busy0, irq0 = busy_ticks(), irq_ticks()
    server0 = sum(pid_ticks(p) for p in pids)
    wall0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - wall0
    busy1, irq1 = busy_ticks(), irq_ticks()
    server1 = sum(pid_ticks(p) for p in pids)
    m = re.search(r"^WRK (.*)$", out, re.M)
    if proc.returncode != 0 or not m:
        sys.stderr.write(f"loadrun: wrk failed ({proc.returncode}):\n{out}\n")
        return None
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    server_s = (server1 - server0) / CLK_TCK
    wrk_s = usage.ru_utime + usage.ru_stime
    foreign_s = max(0.0, (busy1 - busy0) / CLK_TCK - server_s - wrk_s)
    requests = max(r["requests"], 1)
    return {
        "rps": r["requests"] / (r["duration_us"] / 1e6),
        "p50_ms": r["p50_us"] / 1000,
        "p90_ms": r["p90_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "bytes_per_resp": r["bytes"] / requests,
        "non2xx3xx_share": r["non2xx3xx"] / requests,
        "socket_errors": r["connect_err"] + r["read_err"] + r["write_err"] + r["timeout_err"],
        "server_cpu_us_per_req": server_s * 1e6 / requests,
        "wrk_cpu_s": wrk_s,
        "foreign_pct": 100 * foreign_s / (wall * NPROC),
        "softirq_pct": 100 * (irq1 - irq0) / CLK_TCK / (wall * NPROC),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--target", action="append", default=[],
                    help="NAME|URL|PID,PID|ETAG (ETAG may be empty)")
    ap.add_argument("--duration", type=float, default=6)
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--retries", type=int, default=1)
    ap.add_argument("--retry-budget", type=int, default=3,
                    help="repeated runs allowed in all (this invocation)")
    ap.add_argument("--max-foreign", type=float, default=0.10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=NPROC)
    ap.add_argument("--script", default=os.path.join(os.path.dirname(__file__), "wrk.lua"))
    ap.add_argument("--quiet-wait", type=float, default=10,
                    help="seconds to wait, before each run, for the machine to be quiet")
    ap.add_argument("--quiet-budget", type=float, default=40,
                    help="seconds of such waiting allowed in all (this invocation)")
    ap.add_argument("--quiet-only", action="store_true",
                    help="only wait for a quiet machine; print its busy share")
    args = ap.parse_args()
    if args.quiet_only:
        share = wait_quiet(args.max_foreign, args.quiet_wait)
        print(f"{args.case}.quiet_busy_pct {100 * share:.1f}")
        return

    targets = []
    for spec in args.target:
        name, url, pids, etag = (spec.split("|") + ["", "", "", ""])[:4]
        targets.append((name, url, [int(p) for p in pids.split(",") if p], etag))

    duration = max(1, round(args.duration))
    quiet_left = [args.quiet_budget]
    retry_left = [args.retry_budget]

    def settle(pids):
        t = time.monotonic()
        wait_quiet(args.max_foreign, min(args.quiet_wait, quiet_left[0]), pids)
        quiet_left[0] = max(0.0, quiet_left[0] - (time.monotonic() - t))

    results = {name: [] for name, *_ in targets}
    if args.warmup > 0:
        for name, url, pids, etag in targets:
            run_wrk(args, url, pids, etag, max(1, round(args.warmup)))
    for rnd in range(args.rounds):
        for name, url, pids, etag in targets:
            for attempt in range(args.retries + 1):
                if attempt > 0:
                    if retry_left[0] <= 0:
                        break
                    retry_left[0] -= 1
                settle(pids)
                r = run_wrk(args, url, pids, etag, duration)
                if r is None:
                    break
                r["disturbed"] = r["foreign_pct"] > 100 * args.max_foreign
                results[name].append(r)
                sys.stderr.write(
                    f"  {args.case}.{name} round {rnd + 1}.{attempt + 1}: {r['rps']:.0f} req/s "
                    f"p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms, "
                    f"other processes {r['foreign_pct']:.1f}% of the machine, "
                    f"irq+softirq {r['softirq_pct']:.1f}%"
                    f"{' (disturbed)' if r['disturbed'] else ''}\n")
                if not r["disturbed"]:
                    break

    for name, runs in results.items():
        prefix = f"{args.case}.{name}"
        if not runs:
            print(f"{prefix}.failed 1")
            continue
        clean = [r for r in runs if not r["disturbed"]]
        best = max(clean, key=lambda r: r["rps"]) if clean else min(
            runs, key=lambda r: r["foreign_pct"])
        for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "bytes_per_resp",
                    "non2xx3xx_share", "socket_errors", "server_cpu_us_per_req", "foreign_pct",
                    "softirq_pct"):
            print(f"{prefix}.{key} {best[key]:.6g}")
        print(f"{prefix}.disturbed {0 if clean else 1}")
        all_rps = ",".join("%.0f" % r["rps"] for r in runs)
        print(f"{prefix}.all_rps {all_rps}")


if __name__ == "__main__":
    main()
