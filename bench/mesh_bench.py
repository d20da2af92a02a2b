"""Mesh benchmark through `mesh-llm` itself (run by bench/mesh_bench.sh).

For each simulated one-way delay (default 0 and 20 ms, applied with
--net-delay-ms to every node's outgoing QUIC packets, so a round trip gains
twice the delay) it starts a small mesh on loopback (A serves stories260K,
B and C are standby nodes) and reports:

  join        time from spawning a lite client (--client --join) until its
              /mesh/status says joined and lists every node alive
  propagate   time from the first full node listing the new node alive
              until the last one does (a membership change reaching all:
              the joiner dials the token's issuer first, the others learn
              of it through gossip)
  leave       time from SIGTERM of the joiner until no node lists it
  ttft/tok_s  time to first token and generation rate of a greedy streamed
              chat completion with the openai npm client, directly on A vs
              through the lite client (HTTP -> QUIC tunnel -> A)

Timings come from polling /mesh/status every few ms from this process, so
they include up to one poll interval and the HTTP round trip of the poll.
Medians with min-max over --runs repetitions.
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from mesh_serve_lib import MODEL_PATH, ROOT, Work, alive_ids, listed  # noqa: E402


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "n/a"
    return "%8.1f  (%.1f-%.1f)" % (statistics.median(xs), min(xs), max(xs))


def poll_until(nodes, pred, timeout=20.0, step=0.002):
    """Polls every node in parallel; returns the time (time.time()) at which
    pred(node, status) first held for each node (None on timeout)."""
    out = {}

    def one(n):
        t_end = time.time() + timeout
        while time.time() < t_end:
            s = n.status()
            if pred(n, s):
                out[n.name] = time.time()
                return
            time.sleep(step)
        out[n.name] = None

    ts = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def bench_delay(delay, runs, max_tokens, w):
    knob = ["--net-delay-ms", str(delay)] if delay else []
    a = w.node("A%d" % delay, ["--model", MODEL_PATH, "--parallel", "2"] + knob).start()
    tok = a.token
    b = w.node("B%d" % delay, ["--join", tok] + knob).start()
    c = w.node("C%d" % delay, ["--join", tok] + knob).start()
    full = [a, b, c]
    for n in full:
        poll_until([n], lambda n, s: len(alive_ids(s)) == 3)
    poll_until([a], lambda n, s: s is not None and all(
        x.get("rtt_ms") for x in s["nodes"] if not x["self"]), timeout=10, step=0.05)
    rtts = [x["rtt_ms"] or 0.0 for x in a.status()["nodes"] if not x["self"]]

    joins, props, leaves = [], [], []
    for i in range(runs):
        e = w.node("E%d_%d" % (delay, i), ["--client", "--join", tok] + knob)
        seen = {}
        bg = threading.Thread(target=lambda: seen.update(
            poll_until(full, lambda n, s: len(alive_ids(s)) == 4)))
        bg.start()
        t0 = time.time()
        e.start()
        r = poll_until([e], lambda n, s: bool(s) and s["joined"] and len(alive_ids(s)) == 4)
        bg.join()
        if r[e.name] is None or not all(seen.get(n.name) for n in full):
            print("  join %d timed out" % i)
            e.kill()
            continue
        joins.append((r[e.name] - t0) * 1000)
        eid = e.node_id()
        props.append((max(seen.values()) - min(seen.values())) * 1000)
        t1 = time.time()
        e.signal(signal.SIGTERM)
        r3 = poll_until(full, lambda n, s: s is not None and listed(s, eid) is None)
        if all(r3[n.name] for n in full):
            leaves.append((max(r3.values()) - t1) * 1000)
        e.wait_exit(10)

    e = w.node("E%d" % delay, ["--client", "--join", tok] + knob).start()
    poll_until([e], lambda n, s: bool(s) and len(alive_ids(s)) == 4)
    env = dict(os.environ, DIRECT_URL=a.url("/v1"), MESH_URL=e.url("/v1"),
               MAX_TOKENS=str(max_tokens), RUNS=str(runs + 1))
    r = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/mesh_openai.mjs")], env=env,
                       capture_output=True, text=True, timeout=300)
    res = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else None
    for n in [e] + full:
        n.signal(signal.SIGTERM)
    for n in [e] + full:
        n.wait_exit(10)
    return {"rtt": rtts, "join": joins, "propagate": props, "leave": leaves, "gen": res,
            "gen_err": r.stderr[-500:] if r.returncode else ""}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--delays", default="0,20")
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=ROOT).stdout.strip()
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                fl = line.split()
                flags = " ".join(f for f in ("avx2", "fma", "f16c", "avx512f") if f in fl)
                break
    except OSError:
        pass
    print("mesh_bench: git %s, %s, %d cpus (%s), model %s, %d runs, %d tokens" %
          (rev, platform.machine(), os.cpu_count(), flags, os.path.basename(MODEL_PATH),
           args.runs, args.max_tokens))
    w = Work(keep=bool(os.environ.get("KEEP")))
    ok = False
    try:
        for d in [float(x) for x in args.delays.split(",")]:
            d = int(d) if d == int(d) else d
            r = bench_delay(d, args.runs, args.max_tokens, w)
            print("\n== simulated one-way delay %s ms (each node's outgoing packets)" % d)
            print("  QUIC smoothed RTT A->peers: %s ms" %
                  ", ".join("%.1f" % x for x in r["rtt"]))
            print("  %-34s %s" % ("metric", "median  (min-max)"))
            print("  %-34s %s" % ("join (spawn -> joined, all alive) ms", med(r["join"])))
            print("  %-34s %s" % ("join seen by first -> all nodes ms", med(r["propagate"])))
            print("  %-34s %s" % ("SIGTERM -> gone everywhere ms", med(r["leave"])))
            g = r["gen"]
            if not g:
                print("  generation failed: %s" % r["gen_err"])
                continue
            # the first run of each warms up
            dd, mm = g["direct"][1:], g["mesh"][1:]
            print("  %-34s %s" % ("TTFT direct ms", med([x["ttft_ms"] for x in dd])))
            print("  %-34s %s" % ("TTFT via lite client ms", med([x["ttft_ms"] for x in mm])))
            print("  %-34s %s" % ("added TTFT ms", med([m["ttft_ms"] - x["ttft_ms"]
                                                        for m, x in zip(mm, dd)])))
            print("  %-34s %s" % ("tokens/s direct", med([x["tok_s"] for x in dd])))
            print("  %-34s %s" % ("tokens/s via lite client", med([x["tok_s"] for x in mm])))
            print("  %-34s %s" % ("same text direct and via client", g["ok"]))
        ok = True
    finally:
        w.close(ok)
    return 0


if __name__ == "__main__":
    sys.exit(main())
