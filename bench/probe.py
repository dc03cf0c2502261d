#!/usr/bin/env python3
"""Waits until ckptd's /readyz answers 200, timing artifacts requests meanwhile.

    probe.py --port P --prefix KEY --start-ns NS --pid PID [--job JOB]
             [--interval 0.02] [--deadline 300]

--start-ns is the wall-clock time (ns, as `date +%s%N`) the daemon was started
at. Every --interval seconds /readyz is asked (a new connection each time,
like a curl loop) and, with --job, GET /v1/post-training/job/artifacts for
that job is timed from connect to the last body byte. --job auto times the
first job that GET /v1/post-training/jobs lists (asked until one is): a job
already indexed, while the daemon indexes the others. Stops at the first 200
from /readyz, when the daemon exits (status 1) or at the deadline (status 2).

Prints "KEY.ready_s", and with --job "KEY.probes", "KEY.probe_200",
"KEY.probe_other", "KEY.probe_p50_ms", "KEY.probe_p99_ms", "KEY.probe_max_ms".
"""
import argparse
import http.client
import json
import os
import sys
import time


def get(port, path, want_body=False):
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        ms = (time.perf_counter() - t0) * 1000
        return (resp.status, ms, body) if want_body else (resp.status, ms)
    except OSError:
        ms = (time.perf_counter() - t0) * 1000
        return (None, ms, b"") if want_body else (None, ms)
    finally:
        conn.close()


def first_listed_job(port):
    code, _, body = get(port, "/v1/post-training/jobs", want_body=True)
    if code != 200:
        return None
    try:
        jobs = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        return None
    return jobs[0]["job_uuid"] if jobs else None


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--start-ns", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--job")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--deadline", type=float, default=300)
    args = ap.parse_args()

    latencies, codes = [], {}
    job = None if args.job == "auto" else args.job
    status = 2
    ready_s = -1.0
    while True:
        elapsed = (time.time_ns() - args.start_ns) / 1e9
        if elapsed > args.deadline:
            sys.stderr.write(f"probe: not ready after {args.deadline:.0f} s\n")
            break
        try:
            os.kill(args.pid, 0)
            with open(f"/proc/{args.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    raise ProcessLookupError
        except (ProcessLookupError, FileNotFoundError):
            sys.stderr.write("probe: the daemon exited\n")
            status = 1
            break
        code, _ = get(args.port, "/readyz")
        if code == 200:
            ready_s = (time.time_ns() - args.start_ns) / 1e9
            status = 0
            break
        if args.job and job is None:
            job = first_listed_job(args.port)
        if job:
            code, ms = get(args.port, f"/v1/post-training/job/artifacts?job_uuid={job}")
            codes[code] = codes.get(code, 0) + 1
            latencies.append(ms)
        time.sleep(args.interval)

    p = args.prefix
    print(f"{p}.ready_s {ready_s:.3f}")
    if args.job:
        print(f"{p}.probe_job {job or '-'}")
        print(f"{p}.probes {len(latencies)}")
        print(f"{p}.probe_200 {codes.get(200, 0)}")
        print(f"{p}.probe_other {len(latencies) - codes.get(200, 0)}")
        print(f"{p}.probe_p50_ms {percentile(latencies, 50):.3f}")
        print(f"{p}.probe_p99_ms {percentile(latencies, 99):.3f}")
        print(f"{p}.probe_max_ms {max(latencies) if latencies else float('nan'):.3f}")
    sys.exit(status)


if __name__ == "__main__":
    main()
