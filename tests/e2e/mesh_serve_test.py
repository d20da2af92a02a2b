"""The mesh end to end through `mesh-llm` itself (run by test_mesh_serve.sh):

  1. four full nodes (A and B have stories260K: A, with more memory, is
     elected its host and B stands by as a stage; C and D join without a
     model as standby) join through A's invite token and converge: every
     /mesh/status lists the four alive;
  2. a lite client (--client --join) streams a greedy chat completion with
     the official openai npm client and gets exactly what A gives directly
     (also through standby C; /v1/models everywhere lists the model);
  3. a model nobody serves: 503 OpenAI-shaped JSON, quickly;
  4. a forged token (secret altered) is refused: that node never joins and
     nobody lists it;
  5. SIGKILL B: every other node drops it (dead or absent) within 15 s,
     and a request sent meanwhile is answered by A;
  6. SIGTERM C: gone from every other node at once (< 3 s), clean exit;
  7. C restarted with the same HOME rejoins with the same id;
  8. a second model on a node with an API key: listed everywhere, routed
     by name;
  9. the --net-delay-ms test knob shows in the measured RTT.
"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from mesh_serve_lib import (MODEL_PATH, ROOT, Work, alive_ids, forge_token, http,  # noqa: E402
                            listed, wait_until)

failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else ": " + str(detail)))
    sys.stdout.flush()
    if not cond:
        failures.append(name)
    return cond


def chat(node, model="stories260K", **kw):
    body = {"messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 16,
            "temperature": 0}
    if model:
        body["model"] = model
    body.update(kw)
    return http("POST", node.url("/v1/chat/completions"), body, timeout=60)


def main():
    w = Work(keep=bool(os.environ.get("KEEP")))
    ok = False
    try:
        a = w.node("A", ["--model", MODEL_PATH, "--parallel", "2"]).start()
        check("first node prints an invite token", bool(a.token), a.read_log()[-500:])
        tok = a.token
        b = w.node("B", ["--model", MODEL_PATH, "--parallel", "2", "--max-vram", "2",
                         "--join", tok]).start()
        c = w.node("C", ["--join", tok, "--max-vram", "1.5"]).start()
        d = w.node("D", ["--join", tok])
        os.makedirs(os.path.join(d.home, ".models"), exist_ok=True)
        with open(os.path.join(d.home, ".models", "ghost.gguf"), "wb") as fh:
            fh.write(b"GGUF" + b"\0" * 60)
        d.start()
        full = [a, b, c, d]
        # the API answers during load and the mesh runs; wait for all four
        t = wait_until(lambda: all(len(alive_ids(n.status())) == 4 for n in full), 30)
        check("4 nodes converge (every /mesh/status lists 4 alive)", t is not None,
              [len(alive_ids(n.status())) for n in full])
        if t is not None:
            print("     converged %.2f s after the last node started" % t)
        ids = {n.name: n.node_id() for n in full}
        check("node ids differ", len(set(ids.values())) == 4, ids)
        st = c.status()
        me = [n for n in st["nodes"] if n["self"]][0]
        check("status fields present",
              all(k in me for k in ("id", "self", "role", "state", "addresses", "vram_gb",
                                    "models", "serving", "rtt_ms")), me)
        check("standby C advertises the --max-vram cap", me["role"] == "standby"
              and abs(me["vram_gb"] - 1.5) < 0.01, me)
        check("token shown in /mesh/status on loopback", st.get("token") == tok or
              bool(st.get("token")), st.get("token"))
        hosts = wait_until(lambda: [n["id"] for n in c.status()["nodes"]
                                    if n["role"] == "host" and n["serving"] == "stories260K"]
                           == [ids["A"]], 20)
        check("A (more memory) is the one elected host of stories260K, B is not",
              hosts is not None, c.status())

        e = w.node("E", ["--client", "--join", tok]).start()
        t = wait_until(lambda: len(alive_ids(e.status())) == 5, 20)
        check("lite client joins (5 alive)", t is not None, e.status())
        es = e.status()
        me = [n for n in es["nodes"] if n["self"]][0]
        check("lite client role is client", me["role"] == "client", me)
        for n in (a, c, e):
            code, j = http("GET", n.url("/v1/models"))
            check("/v1/models on %s lists stories260K" % n.name,
                  code == 200 and [m["id"] for m in j["data"]] == ["stories260K"], j)
        code, j = http("GET", e.url("/health"))
        check("/health on the lite client is ok", code == 200, j)

        env = dict(os.environ, DIRECT_URL=a.url("/v1"), MESH_URL=e.url("/v1"), MAX_TOKENS="40")
        r = subprocess.run(["node", os.path.join(ROOT, "tests/e2e/mesh_openai.mjs")], env=env,
                           capture_output=True, text=True, timeout=120)
        res = None
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
        check("openai client: streamed chat through the lite client == direct (greedy)",
              r.returncode == 0 and res and res["ok"], (r.stdout[-1500:], r.stderr[-1500:]))
        if res:
            print("     direct: %r (%d chunks); via client: %d chunks, ttft %.1f ms vs %.1f ms"
                  % (res["direct"][0]["text"][:60], res["direct"][0]["chunks"],
                     res["mesh"][0]["chunks"], res["mesh"][0]["ttft_ms"],
                     res["direct"][0]["ttft_ms"]))
        code1, j1 = chat(a)
        code2, j2 = chat(c)
        check("chat through standby C == direct on A", code1 == 200 and code2 == 200 and
              j1["choices"][0]["message"]["content"] == j2["choices"][0]["message"]["content"],
              (j1, j2))
        code3, j3 = chat(e, model=None)
        check("no model named: routed to the first host", code3 == 200 and
              j3["choices"][0]["message"]["content"] == j1["choices"][0]["message"]["content"],
              j3)

        # the client goes away mid-stream: the tunnel is reset and the
        # serving node cancels the generation
        import http.client as httpc
        hc = httpc.HTTPConnection("127.0.0.1", e.port, timeout=30)
        hc.request("POST", "/v1/chat/completions", json.dumps({
            "model": "stories260K", "stream": True, "max_tokens": 1900, "ignore_eos": True,
            "messages": [{"role": "user", "content": "Once upon a time"}]}),
            {"Content-Type": "application/json"})
        resp = hc.getresponse()
        first = [resp.fp.readline() for _ in range(6)]
        hc.sock.shutdown(2)
        hc.close()
        t = wait_until(lambda: "cancelled (client gone)" in a.read_log() + b.read_log(), 10)
        check("client gone mid-stream: the serving node cancels the generation",
              resp.status == 200 and any(x.startswith(b"data: ") for x in first) and t is not None,
              (resp.status, first[:2]))
        t = wait_until(lambda: e.status()["tunnels"] == 0, 10)
        check("... and the proxy forgets the tunnel", t is not None, e.status().get("tunnels"))

        t0 = time.time()
        code, j = chat(e, model="no-such-model")
        dt = time.time() - t0
        check("model nobody serves: 503 JSON error, quickly", code == 503 and isinstance(j, dict)
              and j.get("error", {}).get("code") == "model_not_available" and dt < 2, (code, j, dt))
        code, j = chat(a, model="no-such-model")
        check("a name the mesh never heard of, on a serving node: 404 model_not_found",
              code == 404 and isinstance(j, dict) and
              j.get("error", {}).get("code") == "model_not_found", (code, j))
        for n in (a, e):
            code, j = chat(n, model="ghost")
            check("a model on D's disk that nobody serves, asked of %s: 503 JSON" % n.name,
                  code == 503 and isinstance(j, dict) and
                  j.get("error", {}).get("code") == "model_not_available", (code, j))

        # a forged token: parses, names A, but carries a wrong secret
        forged = forge_token(tok)
        f = w.node("F", ["--client", "--join", forged]).start(timeout=20)
        time.sleep(6)
        fs = f.status()
        fid = fs["node_id"] if fs else None
        others = [listed(n.status(), fid) for n in (a, b, c, d, e)]
        check("forged token (wrong secret): refused, never joined, nobody lists it",
              fs is not None and not fs["joined"] and len(fs["nodes"]) == 1
              and all(x is None for x in others), (fs, others))
        code, j = chat(f)
        check("forged node cannot reach the model (503 JSON)", code == 503 and
              isinstance(j, dict) and "error" in j, (code, j))
        check("the forged node says in its log why it cannot join",
              "mesh secret" in f.read_log(), f.read_log()[-1500:])
        f.kill()
        # a mistyped token: refused at start with a clear message
        k = len(tok) // 2
        typo = tok[:k] + ("A" if tok[k] != "A" else "B") + tok[k + 1:]
        g = w.node("G", ["--client", "--join", typo])
        try:
            g.start(timeout=20)
            check("mistyped token refused at start", False, g.read_log()[-800:])
        except RuntimeError as ex:
            check("mistyped token refused at start", "cannot start the mesh" in str(ex), ex)

        # SIGKILL B (a host): dropped everywhere within 15 s; a request sent
        # through the lite client meanwhile still gets its answer (from A,
        # at once or after B is declared dead)
        bid = ids["B"]
        b.signal(signal.SIGKILL)
        b.proc.wait()
        import threading
        res_k = {}
        th = threading.Thread(target=lambda: res_k.update(r=chat(e)))
        t0 = time.time()
        th.start()
        rest = [a, c, d, e]
        t = wait_until(lambda: all(listed(n.status(), bid) in (None, "dead") for n in rest), 20)
        check("SIGKILL: every other node drops the node within 15 s", t is not None and t <= 15,
              (t, [listed(n.status(), bid) for n in rest]))
        if t is not None:
            print("     dropped after %.1f s" % t)
        th.join(30)
        code5, j5 = res_k.get("r", (None, None))
        check("a request while a host dies is answered (by the other host)", code5 == 200 and
              j5["choices"][0]["message"]["content"] == j1["choices"][0]["message"]["content"],
              (code5, j5))
        print("     answered after %.1f s%s" % (time.time() - t0, " (failover)" if "instead"
                                                  in e.read_log() else ""))

        # SIGTERM C: gone at once, clean exit
        cid = ids["C"]
        c.signal(signal.SIGTERM)
        t = wait_until(lambda: all(listed(n.status(), cid) is None for n in (a, d, e)), 10)
        rc = c.wait_exit(15)
        check("SIGTERM: gone from every other node at once (< 3 s)", t is not None and t < 3,
              (t, [listed(n.status(), cid) for n in (a, d, e)]))
        check("SIGTERM: clean exit (status 0)", rc == 0, rc)
        if t is not None:
            print("     gone after %.2f s" % t)

        # restart C with the same HOME: same id, alive everywhere
        c.start()
        t = wait_until(lambda: all(listed(n.status(), cid) == "alive" for n in (a, d, e)), 20)
        check("restart: rejoins with the same id", t is not None and c.node_id() == cid,
              (t, c.node_id(), cid))

        # a second model, on a node that requires an API key: routed by
        # name, listed everywhere, the serving node's key added on its side
        import shutil
        copy = os.path.join(w.dir, "stories-copy.gguf")
        shutil.copyfile(MODEL_PATH, copy)
        k = w.node("K", ["--model", copy, "--join", tok, "--api-key", "k-secret"]).start()
        t = wait_until(lambda: sorted(m["id"] for m in http("GET", e.url("/v1/models"))[1]
                                      ["data"]) == ["stories-copy", "stories260K"], 20)
        check("two models: /v1/models on the lite client lists both", t is not None,
              http("GET", e.url("/v1/models")))
        code6, j6 = chat(e, model="stories-copy")
        check("request for the second model routed to its node (which has an API key)",
              code6 == 200 and j6["model"] == "stories-copy" and
              j6["choices"][0]["message"]["content"] == j1["choices"][0]["message"]["content"],
              (code6, j6))
        code7, j7 = chat(k, model="stories260K")
        check("the keyed node itself still wants its key", code7 == 401, (code7, j7))
        k.signal(signal.SIGTERM)
        check("clean exit of K", k.wait_exit(15) == 0, k.read_log()[-500:])

        # the delay knob: a client whose outgoing packets wait 30 ms sees a
        # round trip of at least 30 ms to A, and still gets the same answer
        s = w.node("S", ["--client", "--join", tok, "--net-delay-ms", "30"]).start()
        aid = ids["A"]

        def slow_rtt():
            st = s.status()
            for x in (st or {}).get("nodes", []):
                if x["id"] == aid and x.get("rtt_ms"):
                    return x["rtt_ms"]
            return None
        wait_until(lambda: (slow_rtt() or 0) >= 30, 10)
        code4, j4 = chat(s)
        check("--net-delay-ms 30: RTT to A >= 30 ms, same answer", (slow_rtt() or 0) >= 30 and
              code4 == 200 and j4["choices"][0]["message"]["content"] ==
              j1["choices"][0]["message"]["content"], (slow_rtt(), code4, j4))
        s.kill()

        for n in (a, c, d, e):
            n.signal(signal.SIGTERM)
        for n in (a, c, d, e):
            check("clean exit of %s on SIGTERM" % n.name, n.wait_exit(15) == 0, n.read_log()[-800:])
        ok = not failures
    except Exception as ex:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        failures.append("exception: %s" % ex)
    finally:
        w.close(ok)
    print("%d failed" % len(failures))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
