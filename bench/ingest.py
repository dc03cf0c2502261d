#!/usr/bin/env python3
"""Ingest latency: a simulated trainer completes checkpoints one after another
while this same program reads ckptd's event stream.

    ingest.py --port P --root WATCHED_DIR --count 1000 [--variants hf,rename]
              [--pause-ms 2] [--timeout-s 5]
    ingest.py --floor DIR --count 1000

For each checkpoint the trainer first writes everything but the completion
signal, pauses --pause-ms (a real trainer spends seconds here; the pause only
lets ckptd see those files first, as it would), then does the completing
operation:
  hf      writes checkpoint-N/trainer_state.json (open, write, close): the
          Trainer's definitive signal, written last into the final folder;
  rename  renames tmp-checkpoint-N/ (all files already inside, staging names
          are ignored by ckptd) to checkpoint-N/, as newer Trainers do.
t0 = time.monotonic_ns() right before that operation's first syscall; t1 = when
the "checkpoint.created" event naming checkpoint-N has been read from
GET /v1/ckptd/events?job_uuid=<job> (one socket, select(), no polling sleeps).
ckptd publishes a job's new body before its events, so the event's arrival
means the checkpoint is visible over HTTP.

--floor DIR measures the same two operations against a bare inotify watch
(ctypes, the kernel's IN_MOVED_TO / IN_CLOSE_WRITE event read in a blocking
read): the floor any watcher has on this machine, in this language.

Prints "key value" lines: ingest.<variant>.{n,timeouts,p50_ms,p90_ms,p99_ms,
max_ms,first100_p50_ms,last100_p50_ms} or floor.<op>.{n,p50_ms,p99_ms,max_ms}.
"""
import argparse
import ctypes
import json
import os
import select
import socket
import struct
import sys
import time

CONFIG = (b'{\n  "architectures": [\n    "LlamaForCausalLM"\n  ],\n  "hidden_size": 64,\n'
          b'  "model_type": "llama",\n  "num_hidden_layers": 2,\n  "torch_dtype": "float32"\n}\n')


def safetensors():
    header = b'{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    header += b" " * ((8 - len(header) % 8) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


WEIGHTS = safetensors()
# Not weights: ckptd does not check these, the Trainer writes them before the state.
OPAQUE = b"PK\x05\x06" + b"\0" * 18


def trainer_state(step):
    epoch = step / 100
    loss = round(2.0 * 2.718281828 ** (-step / 2000) + 0.5, 4)
    history = [{"epoch": epoch, "grad_norm": 0.87, "learning_rate": 2e-05, "loss": loss, "step": step},
               {"epoch": epoch, "eval_loss": round(loss + 0.1, 4), "eval_runtime": 1.5, "step": step}]
    state = {"best_metric": None, "best_model_checkpoint": None, "epoch": epoch,
             "eval_steps": 10, "global_step": step, "is_hyper_param_search": False,
             "is_local_process_zero": True, "is_world_process_zero": True,
             "log_history": history, "logging_steps": 10, "max_steps": 100000,
             "num_train_epochs": 1000, "save_steps": 10, "total_flos": 0,
             "train_batch_size": 8, "trial_name": None, "trial_params": None}
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()


def write_file(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def write_all_but_state(d):
    os.mkdir(d)
    write_file(os.path.join(d, "config.json"), CONFIG)
    write_file(os.path.join(d, "generation_config.json"), b'{\n  "do_sample": false\n}\n')
    write_file(os.path.join(d, "model.safetensors"), WEIGHTS)
    for name in ("training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        write_file(os.path.join(d, name), OPAQUE)


class event_stream:
    """GET /v1/ckptd/events over HTTP/1.1 (chunked), parsed incrementally."""

    def __init__(self, port, job):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(f"GET /v1/ckptd/events?job_uuid={job} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.raw = b""
        self.text = b""
        self.headers_done = False
        self.chunk_left = 0

    def _feed(self, data):
        self.raw += data
        if not self.headers_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self.raw.split(b"\r\n", 1)[0]
            if b" 200 " not in status:
                raise RuntimeError(f"event stream refused: {status!r}")
            self.raw = self.raw[end + 4:]
            self.headers_done = True
        while self.raw:
            if self.chunk_left == 0:
                line_end = self.raw.find(b"\r\n")
                if line_end < 0:
                    return
                size = int(self.raw[:line_end].split(b";")[0], 16)
                if len(self.raw) < line_end + 2 + size + 2:
                    return  # wait for the whole chunk (they are small)
                self.text += self.raw[line_end + 2:line_end + 2 + size]
                self.raw = self.raw[line_end + 2 + size + 2:]
            else:
                return

    def events(self):
        """Complete SSE events buffered so far, as (type, data) pairs."""
        out = []
        while True:
            end = self.text.find(b"\n\n")
            if end < 0:
                return out
            block, self.text = self.text[:end], self.text[end + 2:]
            kind, data = "message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    kind = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" "))
            out.append((kind, b"\n".join(data)))

    def wait_created(self, identifier, deadline_ns):
        """monotonic_ns at which checkpoint.created for `identifier` was read; None on timeout."""
        while True:
            for kind, data in self.events():
                if kind == "checkpoint.created":
                    if json.loads(data)["checkpoint"]["identifier"] == identifier:
                        return time.monotonic_ns()
            left = (deadline_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                return None
            ready, _, _ = select.select([self.sock], [], [], left)
            if ready:
                data = self.sock.recv(65536)
                if not data:
                    raise RuntimeError("event stream closed")
                self._feed(data)


def stats(prefix, values_ms, timeouts=None):
    s = sorted(values_ms)

    def pct(q, v=s):
        return v[min(len(v) - 1, max(0, int(round(q / 100 * len(v) + 0.5)) - 1))] if v else float("nan")

    print(f"{prefix}.n {len(s)}")
    if timeouts is not None:
        print(f"{prefix}.timeouts {timeouts}")
    print(f"{prefix}.p50_ms {pct(50):.3f}")
    print(f"{prefix}.p90_ms {pct(90):.3f}")
    print(f"{prefix}.p99_ms {pct(99):.3f}")
    print(f"{prefix}.max_ms {s[-1] if s else float('nan'):.3f}")
    if len(values_ms) >= 200:
        print(f"{prefix}.first100_p50_ms {pct(50, sorted(values_ms[:100])):.3f}")
        print(f"{prefix}.last100_p50_ms {pct(50, sorted(values_ms[-100:])):.3f}")
    sys.stdout.flush()


def wait_job_known(port, job, deadline_s=30):
    import http.client
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", f"/v1/post-training/job/artifacts?job_uuid={job}")
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.02)  # setup only; the measurement below never sleeps to poll
    raise RuntimeError(f"job {job} never appeared")


def run_variant(args, variant):
    job = f"ingest-{variant}"
    job_dir = os.path.join(args.root, job)
    os.mkdir(job_dir)
    wait_job_known(args.port, job)
    stream = event_stream(args.port, job)
    # The stream's first bytes (headers, the initial id) arrive before any change.
    time.sleep(0.05)
    latencies, timeouts = [], 0
    for k in range(1, args.count + 1):
        step = 10 * k
        final = os.path.join(job_dir, f"checkpoint-{step}")
        state = trainer_state(step)
        if variant == "hf":
            write_all_but_state(final)
            time.sleep(args.pause_ms / 1000)
            state_path = os.path.join(final, "trainer_state.json")
            t0 = time.monotonic_ns()
            write_file(state_path, state)
        else:
            staging = os.path.join(job_dir, f"tmp-checkpoint-{step}")
            write_all_but_state(staging)
            write_file(os.path.join(staging, "trainer_state.json"), state)
            time.sleep(args.pause_ms / 1000)
            t0 = time.monotonic_ns()
            os.rename(staging, final)
        t1 = stream.wait_created(f"checkpoint-{step}", t0 + int(args.timeout_s * 1e9))
        if t1 is None:
            timeouts += 1
        else:
            latencies.append((t1 - t0) / 1e6)
    stats(f"ingest.{variant}", latencies, timeouts)


# ---- the bare inotify floor -------------------------------------------------

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CLOEXEC = 0o2000000


def run_floor(args):
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = libc.inotify_init1(IN_CLOEXEC)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    os.makedirs(args.floor, exist_ok=True)
    wd = libc.inotify_add_watch(fd, args.floor.encode(), IN_MOVED_TO | IN_CLOSE_WRITE)
    if wd < 0:
        raise OSError(ctypes.get_errno(), "inotify_add_watch")
    state = trainer_state(10)
    renames, writes = [], []
    for k in range(args.count):
        staging = os.path.join(args.floor, f"tmp-{k}")
        os.mkdir(staging)
        t0 = time.monotonic_ns()
        os.rename(staging, os.path.join(args.floor, f"d-{k}"))
        os.read(fd, 4096)  # blocks until the IN_MOVED_TO event is there
        renames.append((time.monotonic_ns() - t0) / 1e6)
        t0 = time.monotonic_ns()
        write_file(os.path.join(args.floor, f"f-{k}.json"), state)
        os.read(fd, 4096)  # IN_CLOSE_WRITE
        writes.append((time.monotonic_ns() - t0) / 1e6)
    os.close(fd)
    stats("floor.rename", renames)
    stats("floor.close_write", writes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--root")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--variants", default="hf,rename")
    ap.add_argument("--pause-ms", type=float, default=2)
    ap.add_argument("--timeout-s", type=float, default=5)
    ap.add_argument("--floor")
    args = ap.parse_args()
    if args.floor:
        run_floor(args)
        return
    for variant in args.variants.split(","):
        run_variant(args, variant)


if __name__ == "__main__":
    main()
