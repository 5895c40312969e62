#!/usr/bin/env python3
"""Steps of the demo with one evaluation worker against two, in the same script.

Each configuration runs the embedded demo (six steps, every worker on one ONNX Runtime
thread) in its own directory and reports the mean time per step as `validator run` prints
it; the ratios are against the one-worker run of the same kind. The journals must replay
(the run checks its own) and hold the same losses as the one-worker local journal, bit for bit.

    cargo build --release && cargo build --release -p replay
    python3 benches/eval_workers.py [--repeat N]

The remote runs need nats-server on PATH or in /usr/sbin (Debian: apt-get install nats-server).
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALIDATOR = os.path.join(ROOT, "target", "release", "validator")
REPLAY = os.path.join(ROOT, "target", "release", "replay")
STEP = re.compile(r"time per step \(mean of (\d+)\): total ([0-9.]+) s")


def nats_server():
    for candidate in ("/usr/sbin/nats-server", shutil.which("nats-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(journal):
    """(step, uid) -> outcome, from `replay export`."""
    out = subprocess.run([REPLAY, "export", "--db", journal], check=True,
                         capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        event = json.loads(line).get("event", {})
        if "losses_computed" in event:
            l = event["losses_computed"]
            found[(l["step"], l["uid"])] = l["outcome"]
    return found


def run_demo(work, extra, workers=0, server=None):
    """Runs the demo in `work` with `extra` flags and `workers` remote workers; returns the mean
    step seconds and the journal."""
    os.makedirs(work)
    demo = os.path.join(work, "demo")
    children = []
    nats = None
    try:
        if workers:
            port = free_port()
            nats = subprocess.Popen([server, "-js", "-a", "127.0.0.1", "-p", str(port),
                                     "-sd", os.path.join(work, "js")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"nats://127.0.0.1:{port}"
            deadline = time.time() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError("nats-server did not start")
                    time.sleep(0.05)
            # Each worker's key, made now, and the list of them the runner trusts.
            keys = [os.path.join(work, f"w{index}.nk") for index in range(workers)]
            trusted = os.path.join(work, "trusted")
            with open(trusted, "w") as listing:
                for key in keys:
                    listing.write(worker_public_key(key) + "\n")
            extra = extra + ["--eval-queue", url, "--queue-workers", str(workers),
                             "--queue-trusted-workers", trusted, "--eval-queue-insecure"]
        runner = subprocess.Popen([VALIDATOR, "run", "--demo", "--demo-dir", demo, "--threads", "1"]
                                  + extra, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        if workers:
            # The demo writes its hub first; the workers fetch from it.
            hub = os.path.join(demo, "hub")
            deadline = time.time() + 30
            while not os.path.isdir(hub):
                if time.time() > deadline:
                    raise RuntimeError("the demo wrote no hub")
                time.sleep(0.02)
            for index in range(workers):
                children.append(subprocess.Popen(
                    [VALIDATOR, "eval-worker", "--queue", url, "--threads", "1",
                     "--hub", f"local:{hub}", "--model-dir", os.path.join(work, f"w{index}"),
                     "--disk-free-min-bytes", "0", "--worker-key", keys[index]],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        out, _ = runner.communicate(timeout=600)
        if runner.returncode != 0 or "all recorded results match" not in out:
            raise RuntimeError(f"the demo failed:\n{out}")
        match = STEP.search(out)
        return float(match.group(2)), os.path.join(demo, "journal")
    finally:
        for child in children:
            child.kill()
            child.wait()
        if nats:
            nats.kill()
            nats.wait()


def worker_public_key(path):
    """Makes the worker key at `path` and returns its public key: a worker logs it when it
    starts, before it connects (here to nothing, so it stops at once)."""
    done = subprocess.run([VALIDATOR, "eval-worker", "--queue", "nats://127.0.0.1:1",
                           "--worker-key", path, "--jobs-max", "0"],
                          capture_output=True, text=True)
    match = re.search(r"public key: (U[A-Z0-9]+)", done.stderr)
    if not match:
        raise RuntimeError(f"no public key for {path}:\n{done.stderr}")
    return match.group(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = nats_server()
    kinds = [("local pool", ["--devices", "cpu"], ["--devices", "cpu,cpu"], 0, 0)]
    if server:
        kinds.append(("remote workers", [], [], 1, 2))
    else:
        print("nats-server not found: remote workers skipped", file=sys.stderr)
    base = tempfile.mkdtemp(prefix="eval-workers-")
    reference = None
    for name, one_flags, two_flags, one_workers, two_workers in kinds:
        ones, twos = [], []
        for attempt in range(args.repeat):
            one, journal_one = run_demo(os.path.join(base, f"{name}-1-{attempt}"), one_flags,
                                        one_workers, server)
            two, journal_two = run_demo(os.path.join(base, f"{name}-2-{attempt}"), two_flags,
                                        two_workers, server)
            if reference is None:
                reference = losses(journal_one)
            for journal in (journal_one, journal_two):
                found = losses(journal)
                if found != reference:
                    keys = sorted(k for k in set(found) | set(reference)
                                  if found.get(k) != reference.get(k))
                    raise RuntimeError(f"{journal}: losses differ from the one-worker journal "
                                       f"at {keys[:5]}: {[found.get(k) for k in keys[:2]]} "
                                       f"against {[reference.get(k) for k in keys[:2]]}")
            ones.append(one)
            twos.append(two)
        one, two = sum(ones) / len(ones), sum(twos) / len(twos)
        print(f"{name}: one worker {one:.3f} s/step, two workers {two:.3f} s/step: "
              f"{two / one:.3f}x (runs: {', '.join(f'{b / a:.3f}' for a, b in zip(ones, twos))}); "
              "losses identical to the one-worker local journal")
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
