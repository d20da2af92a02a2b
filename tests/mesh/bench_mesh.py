#!/usr/bin/env python3
"""Mesh timing benchmark on loopback (real processes, real QUIC).

For a one-way delay of 0 and 20 ms on every node's packets (the netem knob
of net_udp): time for a new node to join a 4-node mesh (from spawning the
process until every node lists it alive), and time for a change (a node
starts serving a model) to reach every node. Status files are polled and
rewritten every 5 ms, so figures carry about +-5 ms of sampling error;
the join time includes process start-up and key generation.

Usage: python3 tests/mesh/bench_mesh.py [rounds]   (BUILD=build by default)"""
import json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

BUILD = os.environ.get("BUILD", "build")
NODE = os.path.join(BUILD, "mesh-node")
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 5


def run(delay_ms):
    tmp = tempfile.mkdtemp(prefix="mesh-bench-")
    procs = []

    def start(name, join=None):
        args = [NODE, "--key", f"{tmp}/{name}.key", "--status-file", f"{tmp}/{name}.json",
                "--token-file", f"{tmp}/{name}.tok", "--status-ms", "5",
                "--delay-ms", str(delay_ms)]
        if join:
            args += ["--join", join]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        return p

    def status(name):
        try:
            with open(f"{tmp}/{name}.json") as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def wait(pred, timeout=20):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if pred():
                return time.time() - t0
            time.sleep(0.002)
        return None

    def sees(names, nid, key="state", val="alive"):
        for n in names:
            s = status(n)
            if not s or not any(x["id"] == nid and x.get(key) == val for x in s["nodes"]):
                return False
        return True

    joins, changes = [], []
    try:
        start("n0")
        while not os.path.exists(f"{tmp}/n0.tok"):
            time.sleep(0.01)
        tok = open(f"{tmp}/n0.tok").read().strip()
        names = ["n0"]
        for i in range(1, 4):
            start(f"n{i}", tok)
            names.append(f"n{i}")
        time.sleep(1.0)
        for r in range(ROUNDS):
            name = f"j{r}"
            t0 = time.time()
            p = start(name, tok)
            while status(name) is None:
                time.sleep(0.002)
            nid = status(name)["node_id"]
            t = wait(lambda: sees(names + [name], nid))
            joins.append(time.time() - t0 if t is not None else float("nan"))
            # a change by the new node reaches everyone
            time.sleep(0.3)
            t0 = time.time()
            p.send_signal(signal.SIGUSR1)
            t = wait(lambda: sees(names, nid, "serving", "test-model-1"))
            changes.append(time.time() - t0 if t is not None else float("nan"))
            p.send_signal(signal.SIGTERM)
            p.wait()
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return joins, changes


def fmt(xs):
    xs = [x * 1000 for x in xs]
    return f"median {statistics.median(xs):7.1f} ms  (min {min(xs):6.1f}, max {max(xs):6.1f}, n={len(xs)})"


print(f"mesh-node benchmark, {ROUNDS} rounds, 4-node mesh + 1 joiner, loopback")
for d in (0, 20):
    j, c = run(d)
    print(f"one-way delay {d:2d} ms: join until all 5 see it  {fmt(j)}")
    print(f"one-way delay {d:2d} ms: change reaches all 4      {fmt(c)}")
