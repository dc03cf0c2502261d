#!/usr/bin/env python3
"""Waits for ckptd's READY=1 the way systemd does for a Type=notify service.

    notified.py --socket PATH --pid-file FILE [--deadline 420]

Binds PATH, a Unix datagram socket: start ckptd with NOTIFY_SOCKET=PATH once
it exists, then write ckptd's PID into FILE. Blocks in recv (no polling, no
connection to ckptd, so nothing competes with ckptd for the CPU) until a
datagram holds READY=1, and prints the wall-clock time it arrived (ns, as
`date +%s%N`). Exits 1 when ckptd exits first, 2 at the deadline; removes
PATH either way.
"""
import argparse
import os
import socket
import sys
import time


def alive(pid_file):
    """False once the PID written into pid_file has exited (True before)."""
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return True
    if pid <= 0:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pid-file", required=True)
    ap.add_argument("--deadline", type=float, default=420)
    args = ap.parse_args()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(args.socket)
    sock.settimeout(0.5)
    end = time.monotonic() + args.deadline
    try:
        while time.monotonic() < end:
            try:
                message = sock.recv(4096)
            except socket.timeout:
                if not alive(args.pid_file):
                    sys.stderr.write("notified: ckptd exited before READY=1\n")
                    return 1
                continue
            if b"READY=1" in message.split(b"\n"):
                print(time.time_ns())
                return 0
        sys.stderr.write(f"notified: no READY=1 within {args.deadline:.0f} s\n")
        return 2
    finally:
        sock.close()
        os.unlink(args.socket)


if __name__ == "__main__":
    sys.exit(main())
