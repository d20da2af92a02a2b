"""Helpers for end-to-end mesh tests of `mesh-llm` (serve): start real
processes on loopback, each with its own HOME (so node keys differ), read
their API port from the ready banner and their invite token from the log,
and poll GET /mesh/status. Used by mesh_serve_test.py and bench/mesh_bench.sh.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("BUILD", "build")
MESH_BIN = os.environ.get("MESH_BIN", os.path.join(ROOT, BUILD, "mesh-llm"))
MODEL_PATH = os.environ.get("MODEL_PATH", os.path.join(ROOT, "models", "stories260K.gguf"))


def http(method, url, body=None, timeout=10):
    """Returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class Node:
    log_from = 0

    def __init__(self, work, name, args, home=None):
        self.name = name
        self.home = home or os.path.join(work, "home-" + name)
        os.makedirs(self.home, exist_ok=True)
        self.log_path = os.path.join(work, name + ".log")
        self.args = args
        self.proc = None
        self.port = None
        self.token = None

    def start(self, timeout=60):
        env = dict(os.environ, HOME=self.home)
        env.pop("MESH_LLM_NET_DELAY_MS", None)
        self.log = open(self.log_path, "a")
        self.log.write("=== start %s\n" % " ".join(self.args))
        self.log.flush()
        self.log_from = self.log.tell()
        self.proc = subprocess.Popen([MESH_BIN, "--port", "0"] + self.args, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT)
        self.t_start = time.time()
        deadline = time.time() + timeout
        while time.time() < deadline:
            exited = self.proc.poll() is not None
            text = self.read_log()
            m = re.findall(r"API: +http://localhost:(\d+)/v1", text)
            if m:
                self.port = int(m[-1])
                t = re.findall(r"^Invite token: (\S+)", text, re.M)
                self.token = t[-1] if t else None
                return self
            if exited:
                raise RuntimeError("%s exited early (%s):\n%s" %
                                   (self.name, self.proc.returncode, text[-3000:]))
            time.sleep(0.05)
        raise RuntimeError("%s: no ready banner:\n%s" % (self.name, self.read_log()[-3000:]))

    def read_log(self, all_runs=False):
        """The log of the current run (of every run with |all_runs|)."""
        with open(self.log_path, errors="replace") as f:
            if not all_runs:
                f.seek(self.log_from)
            return f.read()

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def status(self):
        try:
            code, j = http("GET", self.url("/mesh/status"), timeout=5)
        except (OSError, urllib.error.URLError):
            return None
        return j if code == 200 and isinstance(j, dict) else None

    def node_id(self):
        s = self.status()
        return s["node_id"] if s else None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=15):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def alive_ids(status):
    if not status:
        return set()
    return {n["id"] for n in status.get("nodes", []) if n.get("state") == "alive"}


def listed(status, node_id):
    """The state of |node_id| in |status|, or None when absent."""
    for n in (status or {}).get("nodes", []):
        if n["id"] == node_id:
            return n.get("state")
    return None


def wait_until(pred, timeout, step=0.05):
    """Polls |pred| until true; returns seconds waited or None on timeout."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return time.time() - t0
        time.sleep(step)
    return None


class Work:
    """A scratch directory and the nodes started in it (all killed at the end)."""

    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="mesh-e2e-")
        self.nodes = []
        self.keep = keep

    def node(self, name, args, home=None):
        n = Node(self.dir, name, args, home)
        self.nodes.append(n)
        return n

    def close(self, ok):
        for n in self.nodes:
            n.kill()
        if ok and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("logs kept in", self.dir)


def forge_token(token):
    """|token| with its mesh secret changed and a valid check: it parses,
    names the same mesh and node, but cannot prove membership."""
    import base64
    import hashlib
    blob = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    off = 4 + 1 + 16 + 32  # magic, version, mesh id, issuer id
    blob[off] ^= 0x5A
    body = bytes(blob[:-4])
    blob[-4:] = hashlib.blake2b(body, digest_size=32).digest()[:4]
    return base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
