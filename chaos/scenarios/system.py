"""The running `make up` system, as the chaos scenarios reach it: its
addresses and credentials (.local/demo.env), its binaries, and `cellctl`."""

import hashlib
import hmac
import json
import os
import pathlib
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
ENV = dict(
    line.split("=", 1)
    for line in (LOCAL / "demo.env").read_text().splitlines()
    if "=" in line
)
BIN = pathlib.Path(
    os.environ.get("CARGO_TARGET_DIR", ROOT / "target")
) / os.environ.get("CELLNET_PROFILE", "release")


ETCD_PORT = int(os.environ.get("ETCD_PORT", "12379"))


def cellctl(*args):
    env = dict(os.environ, ADMIN_URL=ENV["ADMIN_URL"], ADMIN_TOKEN=ENV["ADMIN_TOKEN"])
    return subprocess.run([BIN / "cellctl", *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def request(method, url, body=None, headers=None):
    """(status, parsed body, response headers); HTTP errors are answers too,
    and a connection that fails gives status None."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null"), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), e.headers
    except OSError as e:  # refused, reset or timed out: no answer at all
        return None, str(e), {}


def cells():
    """{cell id: endpoint} from `cellctl cells list`."""
    rows = cellctl("cells", "list").splitlines()[1:]
    return {r.split()[0]: r.split()[-1] for r in rows}


def cell_key():
    out = subprocess.run(["etcdctl", "--endpoints", f"http://127.0.0.1:{ETCD_PORT}", "get",
                          "/cellnet/secrets/cell-auth", "--print-value-only"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return bytes.fromhex(out)


def signed_get(key, endpoint, path, tenant):
    """A GET straight to a cell, signed as the router signs (common/src/signing.rs):
    (status, raw body), status None when the cell does not answer."""
    timestamp = str(int(time.time()))
    request_id = f"chaos-{time.monotonic_ns()}"
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for field in (b"GET", path.encode(), tenant.encode(), request_id.encode(),
                  timestamp.encode(), hashlib.sha256(b"").digest()):
        mac.update(len(field).to_bytes(8, "big"))
        mac.update(field)
    req = urllib.request.Request(endpoint + path, headers={
        "x-cellnet-tenant": tenant, "x-request-id": request_id,
        "x-cellnet-timestamp": timestamp, "x-cellnet-signature": "v1=" + mac.hexdigest()})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def documents_on(key, endpoint, tenant):
    """The ids of the tenant's documents a cell holds (from its points), or
    None if it does not answer."""
    status, body = signed_get(key, endpoint, "/v1/points", tenant)
    if status != 200:
        return None
    return {json.loads(line)["document_id"] for line in body.splitlines() if line.strip()}


def find_pid(what, matches):
    """The pid of the one running process whose argument list `matches`."""
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            argv = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if args and matches(args):
            return pid
    raise SystemExit(f"{pathlib.Path(sys.argv[0]).stem}: no running process for {what}")


def own_command(pid):
    """The argument list and environment a running process was started with."""
    argv = [a.decode() for a in pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    environ = dict(kv.decode().split("=", 1) for kv in
                   pathlib.Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv)
    return argv, environ
