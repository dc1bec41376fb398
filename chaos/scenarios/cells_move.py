"""Cells added or drained under load, against a running `make up` system.

Fifty tenants (TENANTS), each holding a fact only it knows. Readers ask every
tenant its question through both routers, round after round; a writer adds a
note to every tenant and deletes the one before every other round, trying
each write again until it is acknowledged. Meanwhile:

  scale-out  cell-4 (us-east) then cell-5 (eu-west) are started; while a tenant
             is copied onto cell-5 it is killed with SIGKILL and started again,
             and while a move is in progress the control plane is killed with
             SIGKILL and started again.
  drain      cell-2 is drained; mid-move the control plane is killed with
             SIGKILL and started again; once drained, cell-2 is removed.

Checked at the end: every answer came with the tenant's own document; every
acknowledged write, and no deleted one, is on every committed member; each
new cell holds its share of tenants (within the ε = 0.25 bound); a drained
cell holds nothing and `cellctl cells remove` succeeds. Printed: query
p50/p99 before and during the moves, and how long each phase took.
Exits non-zero when a check fails.

Usage: python3 chaos/scenarios/cells_move.py scale-out|drain, against
`CELLNET_COPY_RATE=20 make up` (a low copy rate, so that a copy lasts long
enough to be interrupted).
"""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

from system import (ENV, LOCAL, ROOT, cell_key, cellctl, cells, documents_on, find_pid,
                    own_command, request)

MODES = ("scale-out", "drain")
if len(sys.argv) != 2 or sys.argv[1] not in MODES:
    raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(MODES)}")
MODE = sys.argv[1]
TENANTS = int(os.environ.get("TENANTS", "50"))
READERS = 4
ROUTERS = [ENV["ROUTER_URL"], ENV.get("ROUTER_URL_2", ENV["ROUTER_URL"])]
EPSILON = 0.25
RUN = f"{int(time.time()) % 100000:05d}"


def tenant(i):
    return f"mv{RUN}-{i:02d}"


def fact(i):
    return (f"The vault of {tenant(i)} opens with the code word "
            f"{'abcdefghijklmnopqrstuvwxyz'[i % 26]}{i}-{RUN}.")


def question(i):
    return f"What code word opens the vault of {tenant(i)}?"


def admin_get(path):
    """A GET of the admin API, waiting out a control plane that is restarting."""
    deadline = time.time() + 60
    while True:
        status, body, _ = request("GET", f"{ENV['ADMIN_URL']}{path}",
                                  headers={"Authorization": f"Bearer {ENV['ADMIN_TOKEN']}"})
        if status == 200:
            return body
        if time.time() > deadline:
            raise SystemExit(f"cells-move: GET {path}: {status} {body}")
        time.sleep(0.1)


def placement():
    return admin_get("/admin/placement")


def mine(p):
    return [t for t in p["tenants"] if t["tenant"].startswith(f"mv{RUN}-")]


def settled():
    p = placement()
    return not p["pending"] and all(t["moving"] is None and not t["leaving"] for t in p["tenants"])


def lifecycle(cell):
    cells_now = admin_get("/admin/cells")["cells"]
    return next((c["spec"]["lifecycle"] for c in cells_now if c["id"] == cell), None)


def wait(what, condition, secs):
    deadline = time.time() + secs
    while not condition():
        if time.time() > deadline:
            raise SystemExit(f"cells-move: {what}: not within {secs} s")
        time.sleep(0.05)


def restart(pid, name):
    """kill -9 a process, then start it again as it was started."""
    argv, environ = own_command(pid)
    os.kill(pid, signal.SIGKILL)
    with open(LOCAL / "logs" / f"{name}.log", "a") as err, \
            open(LOCAL / "logs" / f"{name}.out", "a") as out:
        p = subprocess.Popen(argv, env=environ, stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    with open(LOCAL / "pids", "a") as pids:
        pids.write(f"{p.pid}\n")


def control_plane_pid():
    config = str(LOCAL / "config" / "control-plane.yaml")
    return find_pid("the control plane", lambda a: a[0].endswith("/control-plane") and config in a)


def cell_pid(cell):
    config = str(LOCAL / "config" / f"{cell}.yaml")
    return find_pid(cell, lambda a: a[0].endswith("/cell") and config in a)


def start_cell(cell, region, port):
    subprocess.run([ROOT / "scripts" / "start-cell.sh", cell, region, str(port)], check=True)


def main():
    keys = []
    for i in range(TENANTS):
        key = cellctl("tenants", "create", tenant(i), "--quiet")
        cellctl("tenants", "set", tenant(i), "--rps", "1000", "--burst", "1000")
        keys.append({"Authorization": f"Bearer {key}"})
    for i, auth in enumerate(keys):
        doc = {"documents": [{"id": f"fact-{i}", "text": fact(i)}]}
        deadline = time.time() + 20
        while request("POST", f"{ROUTERS[i % 2]}/v1/documents", doc, auth)[0] != 200:
            if time.time() > deadline:
                raise SystemExit(f"cells-move: {tenant(i)} never became usable")
            time.sleep(0.2)
    print(f"{TENANTS} tenants, each with its own fact; {READERS} readers over {len(set(ROUTERS))} routers")

    stop = threading.Event()
    phase = ["before"]
    latencies = {"before": [], "moving": [], "after": []}
    wrong = []
    notes = [set() for _ in keys]
    writes = {"acknowledged": 0, "tried again": 0}

    def read(offset):
        n = offset
        while not stop.is_set():
            i = n % TENANTS
            sent = time.time()
            status, body, headers = request("POST", f"{ROUTERS[n % 2]}/v1/query",
                                            {"query": question(i)}, keys[i])
            latencies[phase[0]].append(time.time() - sent)
            cited = [c["document_id"] for c in body.get("citations", [])] if status == 200 else []
            if f"fact-{i}" not in cited:
                wrong.append(f"{tenant(i)}: {status} {cited} from {headers.get('x-cellnet-cell')}")
            n += READERS

    def acknowledge(method, url, body, auth):
        for attempt in range(50):
            if request(method, url, body, auth)[0] == 200:
                writes["acknowledged"] += 1
                return
            writes["tried again"] += 1
            time.sleep(0.1 + 0.05 * attempt)
        raise SystemExit(f"cells-move: {method} {url} never acknowledged")

    def write():
        r = 0
        while not stop.is_set():
            for i, auth in enumerate(keys):
                router = ROUTERS[(r + i) % 2]
                note = f"note-{i}-{r}"
                acknowledge("POST", f"{router}/v1/documents", {"documents": [
                    {"id": note, "text": f"Round {r} of {tenant(i)} was logged."}]}, auth)
                notes[i].add(note)
                if r % 2 == 1:
                    old = f"note-{i}-{r - 1}"
                    acknowledge("DELETE", f"{router}/v1/documents/{old}", None, auth)
                    notes[i].discard(old)
            r += 1

    threads = [threading.Thread(target=read, args=(k,), daemon=True) for k in range(READERS)]
    threads.append(threading.Thread(target=write, daemon=True))
    for t in threads:
        t.start()
    time.sleep(10)  # a baseline of latencies before anything moves
    started = time.time()
    phase[0] = "moving"
    timings = []
    if MODE == "scale-out":
        for cell, region, port in (("cell-4", "us-east", 18104), ("cell-5", "eu-west", 18105)):
            t0 = time.time()
            start_cell(cell, region, port)
            if cell == "cell-5":
                wait("a tenant is copied onto cell-5", lambda: any(
                    t["moving"] and t["moving"]["step"] == "copy" and cell in t["moving"]["to"]
                    for t in placement()["tenants"]), 60)
                restart(cell_pid(cell), cell)
                print("  cell-5 killed (SIGKILL) mid-copy and started again")
                wait("a move is in progress", lambda: any(t["moving"] for t in placement()["tenants"]), 60)
                restart(control_plane_pid(), "control-plane")
                print("  the control plane killed (SIGKILL) mid-move and started again")
            wait(f"{cell} becomes active", lambda: lifecycle(cell) == "active", 600)
            wait("placement settles", settled, 600)
            timings.append(f"{cell} joined and took its share in {time.time() - t0:.1f} s")
    else:
        t0 = time.time()
        cellctl("cells", "drain", "cell-2")
        wait("a move is in progress", lambda: any(t["moving"] for t in placement()["tenants"]), 60)
        restart(control_plane_pid(), "control-plane")
        print("  the control plane killed (SIGKILL) mid-move and started again")
        wait("cell-2 is drained", lambda: lifecycle("cell-2") == "drained", 600)
        wait("placement settles", settled, 600)
        timings.append(f"cell-2 drained in {time.time() - t0:.1f} s")
    phase[0] = "after"
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join(timeout=60)

    key = cell_key()
    endpoints = cells()
    failures = []
    committed = {t["tenant"]: t["members"] for t in mine(placement())}
    for i in range(TENANTS):
        want = {f"fact-{i}"} | notes[i]
        for member in committed[tenant(i)]:
            have = documents_on(key, endpoints[member], tenant(i))
            if have != want:
                failures.append(f"{tenant(i)} on {member}: missing {sorted(want - (have or set()))}, "
                                f"extra {sorted((have or set()) - want)}")
    every = placement()["tenants"]
    cells_now = [c for c in endpoints if lifecycle(c) == "active"]
    bound = math.ceil((1 + EPSILON) * len(every) / len(cells_now))
    homes = {c: sum(1 for t in every if t["members"][0] == c) for c in cells_now}
    if MODE == "scale-out":
        for cell in ("cell-4", "cell-5"):
            if not 1 <= homes.get(cell, 0) <= bound:
                failures.append(f"{cell} is home to {homes.get(cell, 0)} tenants (bound {bound})")
    else:
        held = [t["tenant"] for t in every if "cell-2" in t["members"]]
        if held:
            failures.append(f"cell-2 still holds {held}")
        for i in range(TENANTS):
            left = documents_on(key, endpoints["cell-2"], tenant(i))
            if left:
                failures.append(f"cell-2 still holds points of {tenant(i)}")
        cellctl("cells", "remove", "cell-2")
        timings.append("cell-2 removed")

    def pct(xs, q):
        xs = sorted(xs)
        return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    reads = sum(len(v) for v in latencies.values())
    print(f"{MODE}: {'; '.join(timings)}; {time.time() - started:.1f} s in all")
    for when in ("before", "moving", "after"):
        xs = latencies[when]
        print(f"  queries {when:>6}: {len(xs):6d}, p50 {pct(xs, 0.5):7.1f} ms, p99 {pct(xs, 0.99):7.1f} ms")
    print(f"  answers without the tenant's own document: {len(wrong)} of {reads}")
    for w in wrong[:10]:
        print(f"    {w}")
    print(f"  writes: {writes['acknowledged']} acknowledged, {writes['tried again']} tried again")
    print(f"  tenants homed per active cell: {json.dumps(homes)} (bound {bound})")
    print(f"  every acknowledged write on every committed member: {'yes' if not failures else 'NO'}")
    for f in failures[:20]:
        print(f"    {f}")
    if wrong or failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
