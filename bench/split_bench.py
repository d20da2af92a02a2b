"""Split-inference benchmark (run by bench/split_bench.sh, `make bench-split`).

1. Decode speed, solo vs 2 vs 3 pipeline stages, with a simulated one-way
   delay of 0, 5 and 20 ms on every outgoing QUIC packet of every process
   (tools/stage-node --delay-ms, the net layer's netem knob). Each
   configuration is real processes on loopback: S-1 `stage-node worker`s
   and one `stage-node host` that runs layers [0, a) and the output head.
   The host first decodes one request solo (whole model in-process, same
   machine load) and then the same request split, --runs times each, and
   prints the tokens/s of each run plus where the split time went (its own
   layers, waiting on the pipeline, the head); each worker prints the
   seconds its forward passes took when stopped.

   Data flow of one decode step (one token of one request):
       host: embed + layers [0,a) -> hop -> stage 2: [a,b) -> hop -> ...
       -> stage S: [.., n) + final norm -> hop -> host: head + sampling
   S hops for S stages (the host counts as stage 1), all sequential, so
       per-token time ~= compute (the solo time) + S x delay + S x per-hop cost
   and the table compares the measurement with compute + S x delay.

2. Join to serving with `mesh-llm` itself: node A serves the model with a
   --max-vram too small to hold it (it waits and answers 503), node B is
   spawned with --join and its own --max-vram; measured from spawning B to
   B's ready banner, to A's /mesh/status showing 2 stages, and to the first
   completion token served by A.

All processes run 1 compute thread. Medians with (min-max) over the runs.
"""
import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from mesh_serve_lib import Work, http  # noqa: E402

BUILD = os.environ.get("BUILD", "build")
STAGE_NODE = os.path.join(ROOT, BUILD, "stage-node")


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="%.1f"):
    if not xs:
        return "n/a"
    return (fmt + " (" + fmt + "-" + fmt + ")") % (med(xs), min(xs), max(xs))


def fmt_s(v):
    return "%.2f" % v if v is not None else "?"


def bounds_for(n_layer, stages):
    return [n_layer * i // stages for i in range(1, stages)]


def run_split(model, n_layer, stages, delay, runs, n_gen, tmp):
    """One host + stages-1 workers. Returns the host's bench-json merged with
    the workers' worker-json list, or raises."""
    procs = []
    logs = []
    try:
        tok_file = os.path.join(tmp, "w1.tok")
        for i in range(1, stages):
            log = open(os.path.join(tmp, "s%d-d%d-w%d.log" % (stages, delay, i)), "w+")
            logs.append(log)
            args = [STAGE_NODE, "worker", "--model", model, "--threads", "1",
                    "--delay-ms", str(delay),
                    "--token-file", os.path.join(tmp, "w%d.tok" % i)]
            if i > 1:
                args += ["--join", open(tok_file).read().strip()]
            procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            t_end = time.time() + 20
            while not os.path.exists(os.path.join(tmp, "w%d.tok" % i)):
                if time.time() > t_end or procs[-1].poll() is not None:
                    raise RuntimeError("worker %d did not start" % i)
                time.sleep(0.05)
        token = open(tok_file).read().strip()
        split = ",".join(str(b) for b in bounds_for(n_layer, stages))
        host = subprocess.run([STAGE_NODE, "host", "--model", model, "--join", token,
                               "--split", split, "--threads", "1", "--n-gen", str(n_gen),
                               "--runs", str(runs), "--bench", "--delay-ms", str(delay)],
                              capture_output=True, text=True, timeout=300)
        m = re.search(r"^bench-json: (.*)$", host.stdout, re.M)
        if host.returncode != 0 or not m:
            raise RuntimeError("host failed (rc %d):\n%s%s" %
                               (host.returncode, host.stdout[-2000:], host.stderr[-2000:]))
        res = json.loads(m.group(1))
        res["split"] = split
        res["workers"] = []
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p, log in zip(procs, logs):
            p.wait(timeout=10)
            log.seek(0)
            w = re.search(r"^worker-json: (.*)$", log.read(), re.M)
            if w:
                res["workers"].append(json.loads(w.group(1)))
        for f in os.listdir(tmp):
            if f.endswith(".tok"):
                os.unlink(os.path.join(tmp, f))
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()


def log_time(text, pattern):
    """Epoch seconds of the first log line matching |pattern| (the log's
    HH:MM:SS.mmm is local time of today), or None."""
    m = re.search(r"^(\d\d):(\d\d):(\d\d\.\d+) \w+ +.*" + pattern, text, re.M)
    if not m:
        return None
    lt = time.localtime()
    midnight = time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 0, 0, 0, 0, 0, -1))
    return midnight + int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def join_to_serving(model, vram_a, vram_b, timeout=60):
    """Seconds from spawning B to: B in A's mesh (B's log), A's plan, the
    plan acknowledged (both stages loaded), A's first token served. Returns
    a dict or raises."""
    w = Work()
    ok = False
    try:
        common = ["--model", model, "--threads", "1", "--parallel", "1", "--ctx-size", "256"]
        a = w.node("A", common + ["--max-vram", vram_a]).start(timeout=60)
        code, j = http("GET", a.url("/v1/models"))
        model_id = j["data"][0]["id"] if code == 200 else os.path.basename(model)[:-5]
        body = {"model": model_id, "prompt": "Once upon a time", "max_tokens": 1,
                "temperature": 0}
        code, _ = http("POST", a.url("/v1/completions"), body, timeout=30)
        if code != 503:
            raise RuntimeError("A should wait for a peer (503), got %d" % code)
        t0 = time.time()
        b = w.node("B", common + ["--max-vram", vram_b, "--join", a.token]).start(timeout=60)
        t_banner = time.time() - t0
        t_plan = None
        t_first = None
        while time.time() - t0 < timeout:
            if t_plan is None:
                s = a.status() or {}
                if (s.get("split") or {}).get("n_stages") == 2:
                    t_plan = time.time() - t0
            code, j = http("POST", a.url("/v1/completions"), body, timeout=30)
            if code == 200:
                t_first = time.time() - t0
                if t_plan is None:
                    t_plan = t_first
                break
            time.sleep(0.02)
        if t_first is None:
            raise RuntimeError("A did not serve within %d s:\n%s" % (timeout, a.read_log()[-2000:]))
        ok = True
        la, lb = a.read_log(), b.read_log()
        marks = {"joined_s": log_time(lb, "joined mesh"), "plan_s": log_time(la, "split: plan "),
                 "loaded_s": log_time(la, "acknowledged by")}
        res = {k: (v - t0 if v else None) for k, v in marks.items()}
        res.update({"banner_s": t_banner, "status_plan_s": t_plan, "first_token_s": t_first})
        return res
    finally:
        w.close(ok)


def print_tables(head, rows, joins, vram):
    if rows:
        print_decode(head, rows)
    if joins:
        print_join(joins, vram)


def print_decode(head, rows):
    solo_all = [x for r in rows for x in r["solo_tps"]]
    print()
    print("decode, one request, %d tokens, median (min-max) of %d runs; 1 thread per process;"
          " solo over all %d solo runs: %s tok/s = %.1f ms/token; load average %.2f at start" %
          (head["n_gen"], head["runs"], len(solo_all), spread(solo_all), 1000 / med(solo_all),
           head.get("loadavg_start", float("nan"))))
    print()
    hdr = ("| stages | delay | split tok/s | ms/token | solo ms/token (same run) "
           "| compute ms/step: host + workers + head | expected: compute + S x delay "
           "| measured - expected | hops ms/step (wait - remote compute) |")
    print(hdr)
    print("|" + " --- |" * (hdr.count("|") - 1))
    print("| 1 (solo) | - | %s | %.1f | | | | | |" % (spread(solo_all), 1000 / med(solo_all)))
    for r in rows:
        S, d = r["stages"], r["delay_ms"]
        ms = 1000 / med(r["split_tps"])
        solo_ms = 1000 / med(r["solo_tps"])
        n = max(r["steps"], 1)
        host_ms = (r["busy_s"] - r["wait_s"]) / n * 1000
        head_ms = r["head_s"] / n * 1000
        work_ms = sum(w["compute_s"] for w in r["workers"]) / n * 1000
        hops_ms = (r["wait_s"] - r["head_s"]) / n * 1000 - work_ms
        comp = host_ms + work_ms + head_ms
        exp = comp + S * d
        print("| %d | %d ms | %s | %.1f | %.1f | %.1f = %.1f + %.1f + %.1f | %.1f | %+.1f | "
              "%.1f = %d x %d + %.1f |" %
              (S, d, spread(r["split_tps"]), ms, solo_ms, comp, host_ms, work_ms, head_ms, exp,
               ms - exp, hops_ms, S, d, hops_ms - S * d))


def print_join(joins, vram):
    print()
    print("join to serving (%d runs, --max-vram %s GB on A, 0.9 x that on B), seconds after spawning B:" %
          (len(joins), vram))
    print()
    print("| B in the mesh | A's plan (2 stages) | plan acknowledged (both stages loaded) "
          "| first token served |")
    print("| --- | --- | --- | --- |")

    def col(k):
        return spread([j[k] for j in joins if j.get(k) is not None], "%.2f")
    print("| %s | %s | %s | %s |" % (col("joined_s"), col("plan_s"), col("loaded_s"),
                                      col("first_token_s")))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model")
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--table", help="print the tables of a saved results file and exit")
    ap.add_argument("--delays", default="0,5,20")
    ap.add_argument("--stages", default="2,3")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--join-runs", type=int, default=3)
    ap.add_argument("--vram", default="0.2", help="--max-vram of A in the join test (B gets 0.9 x)")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.table:
        lines = [json.loads(x) for x in open(a.table) if x.strip()]
        rows = [x for x in lines if "split_tps" in x]
        joins = [x for x in lines if "first_token_s" in x]
        print_tables(lines[0], rows, joins, lines[0].get("vram", "?"))
        return
    if not a.model or not a.n_layer or not a.out:
        ap.error("--model, --n-layer and --out are required")
    delays = [int(x) for x in a.delays.split(",") if x != ""]
    stages = [int(x) for x in a.stages.split(",") if x != ""]

    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip() != ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            cpu = m.group(1) if m else ""
    except OSError:
        pass
    head = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git": rev + ("+dirty" if dirty else ""), "cpu": cpu, "nproc": os.cpu_count(),
            "model": a.model, "model_bytes": os.path.getsize(a.model),
            "loadavg_start": os.getloadavg()[0], "runs": a.runs, "n_gen": a.n_gen,
            "vram": a.vram}
    print("split bench: %s (%.0f MB), %d layers, git %s, %s, %d cores, load %.2f" %
          (os.path.basename(a.model), head["model_bytes"] / 1e6, a.n_layer, head["git"], cpu,
           os.cpu_count(), head["loadavg_start"]))
    out = open(a.out, "w")
    out.write(json.dumps(head) + "\n")
    out.flush()

    rows = []
    tmp = tempfile.mkdtemp(prefix="split-bench-")
    for s in stages:
        for d in delays:
            t0 = time.time()
            r = run_split(a.model, a.n_layer, s, d, a.runs, a.n_gen, tmp)
            r["wall_s"] = time.time() - t0
            out.write(json.dumps(r) + "\n")
            out.flush()
            rows.append(r)
            print("  %d stages, %2d ms: split %s tok/s, solo %s tok/s (%.0f s)" %
                  (s, d, spread(r["split_tps"]), spread(r["solo_tps"]), r["wall_s"]))
            sys.stdout.flush()

    joins = []
    for i in range(a.join_runs):
        # B a little smaller than A, so that A stays the elected host
        j = join_to_serving(a.model, a.vram, "%g" % (float(a.vram) * 0.9))
        out.write(json.dumps(dict(j, join_run=i)) + "\n")
        out.flush()
        joins.append(j)
        print("  join %d: joined %s s, planned %s s, stages loaded %s s, first token %.2f s" %
              (i + 1, fmt_s(j["joined_s"]), fmt_s(j["plan_s"]), fmt_s(j["loaded_s"]),
               j["first_token_s"]))
        sys.stdout.flush()
    head_end = {"loadavg_end": os.getloadavg()[0]}
    out.write(json.dumps(head_end) + "\n")
    out.close()

    print_tables(head, rows, joins, a.vram)
    print("raw results: %s (bench/split_bench.py --table FILE prints the tables again)" % a.out)

if __name__ == "__main__":
    main()
