"""A cell, Redis or etcd killed under load, against a running `make up` system.

Open-loop reads (loadgen) of a question the tenant's documents answer, through
the router, and a steady stream of document writes beside them. While they run:
  10 s  the victim is killed with SIGKILL: the tenant's home cell (the one
        serving its reads), the Redis server or the etcd server
  25 s  it is started again, as it was started before
Printed: what the clients saw (failures by kind, latency), which cell answered
before, during and after, every write the router acknowledged and whether every
member of the replica set holds it at the end. For a cell: how long until the
writes it missed were on it (the router replays them from its hints).
Exits non-zero if a read failed or an acknowledged write is missing anywhere.

Usage: python3 chaos/scenarios/kill_under_load.py cell|redis|etcd [RATE]
       (default 1000 reads/s)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from system import (BIN, ENV, ETCD_PORT, LOCAL, cell_key, cellctl, cells, documents_on, find_pid,
                    own_command, request)

VICTIMS = ("cell", "redis", "etcd")
if len(sys.argv) < 2 or sys.argv[1] not in VICTIMS:
    raise SystemExit(f"usage: {sys.argv[0]} {'|'.join(VICTIMS)} [RATE]")
VICTIM = sys.argv[1]
RATE = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
REDIS_PORT = int(os.environ.get("REDIS_PORT", "16379"))
DURATION = 40
KILL_AT, RESTART_AT = 10, 25
WRITES_PER_SECOND = 5
QUESTION = "Where do orders ship from?"


def victim(home):
    """(pid, name, how to start it again, whether it is up again)."""
    if VICTIM == "cell":
        config = str(LOCAL / "config" / f"{home}.yaml")
        pid = find_pid(home, lambda a: a[0].endswith("/cell") and config in a)
        return pid, home, own_command(pid)
    if VICTIM == "etcd":
        data = str(LOCAL / "data" / "etcd")
        pid = find_pid("etcd", lambda a: a[0].endswith("etcd") and data in a)
        return pid, "etcd", own_command(pid)
    # Redis rewrites its argument list into a title; it is started as up.sh starts it.
    pid = find_pid("redis", lambda a: a[0].startswith("redis-server") and f":{REDIS_PORT}" in a[0])
    argv = ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(LOCAL / "data")]
    return pid, "redis", (argv, dict(os.environ))


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    key = cell_key()
    tenant = f"kill-{VICTIM}-{int(time.time())}"
    api_key = cellctl("tenants", "create", tenant, "--plan", "enterprise", "--quiet")
    cellctl("tenants", "set", tenant, "--rps", "1000000", "--burst", "1000000")
    auth = {"Authorization": f"Bearer {api_key}"}
    first_doc = {"id": "shipping", "text": "Shipping. Orders ship from our warehouse in Lyon. "
                                           "Standard delivery takes three to five days."}
    deadline = time.time() + 15
    while True:
        status, body, _ = request("POST", f"{ENV['ROUTER_URL']}/v1/documents",
                                  {"documents": [first_doc]}, auth)
        if status == 200:
            break
        if time.time() > deadline:
            raise SystemExit(f"kill-under-load: the tenant never became usable: {status} {body}")
        time.sleep(0.2)
    # When each acknowledged document was acknowledged: every member must hold them all.
    acked = {"shipping": 0.0}
    status, body, headers = request("POST", f"{ENV['ROUTER_URL']}/v1/query", {"query": QUESTION}, auth)
    assert status == 200, body
    home = headers["x-cellnet-cell"]
    endpoints = cells()
    members = [c for c, url in endpoints.items() if documents_on(key, url, tenant)]
    assert home in members and len(members) >= 2, f"replica set {members}, home {home}"
    pid, name, (argv, environ) = victim(home)

    start = time.time()
    refused = {}
    served_by = {"before": {}, "down": {}, "after": {}}
    phase = ["before"]
    probes = []  # (sent at, latency, answered by)
    stop = threading.Event()

    def write():
        n = 0
        while not stop.is_set():
            n += 1
            doc = {"id": f"note-{n}", "text": f"Note {n}. Parcel {n} left the Lyon warehouse."}
            status, body, _ = request("POST", f"{ENV['ROUTER_URL']}/v1/documents",
                                      {"documents": [doc]}, auth)
            if status == 200:
                acked[doc["id"]] = time.time() - start
            else:
                refused[status] = refused.get(status, 0) + 1
            time.sleep(max(0.0, start + n / WRITES_PER_SECOND - time.time()))

    def probe():
        # Which cell answers, sampled ten times a second beside the load.
        while not stop.is_set():
            sent = time.time()
            status, _, headers = request("POST", f"{ENV['ROUTER_URL']}/v1/query", {"query": QUESTION}, auth)
            who = headers.get("x-cellnet-cell", f"status {status}")
            probes.append((sent - start, time.time() - sent, who))
            bucket = served_by[phase[0]]
            bucket[who] = bucket.get(who, 0) + 1
            time.sleep(0.1)

    threads = [threading.Thread(target=write, daemon=True), threading.Thread(target=probe, daemon=True)]
    for t in threads:
        t.start()
    load = subprocess.Popen(
        [BIN / "loadgen", "--url", f"{ENV['ROUTER_URL']}/v1/query", "--rate", str(RATE),
         "--duration", f"{DURATION}s", "--warmup", "0s", "--timeout", "30s", "--json",
         "--max-connections", "512", "--body", json.dumps({"query": QUESTION}),
         "-H", f"Authorization: Bearer {api_key}"],
        stdout=subprocess.PIPE, text=True)

    def at(t):
        time.sleep(max(0.0, start + t - time.time()))

    at(KILL_AT)
    os.kill(pid, signal.SIGKILL)
    phase[0] = "down"
    killed_at = time.time() - start
    at(RESTART_AT)
    log = LOCAL / "logs" / f"{name}.log"
    out = LOCAL / "logs" / f"{name}.out"
    with open(log, "a") as err, open(out, "a") as stdout:
        restarted = subprocess.Popen(argv, env=environ, stdout=stdout, stderr=err,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
    with open(LOCAL / "pids", "a") as pids:
        pids.write(f"{restarted.pid}\n")
    restarted_at = time.time() - start
    up_again = {"cell": lambda: documents_on(key, endpoints[home], tenant) is not None,
                "redis": lambda: port_open(REDIS_PORT),
                "etcd": lambda: port_open(ETCD_PORT)}[VICTIM]
    deadline = time.time() + 60
    while not up_again():
        if time.time() > deadline:
            raise SystemExit(f"kill-under-load: {name} did not come back within 60 s; see {log}")
        time.sleep(0.05)
    phase[0] = "after"
    serving_at = time.time() - start
    # The writes a killed cell missed reach it from the router's hints.
    missed = {d for d, t in list(acked.items()) if killed_at <= t < restarted_at}
    replayed_at, deadline = None, time.time() + 60
    while VICTIM == "cell" and time.time() < deadline:
        if missed <= (documents_on(key, endpoints[home], tenant) or set()):
            replayed_at = time.time() - start
            break
        time.sleep(0.1)
    result = json.loads(load.communicate()[0])
    stop.set()
    for t in threads:
        t.join()

    held = {c: documents_on(key, endpoints[c], tenant) or set() for c in members}

    total = result["ok"] + sum(result["failed"].values())
    failed = sum(result["failed"].values())
    print(f"reads: {RATE}/s for {DURATION} s through the router; writes: {WRITES_PER_SECOND}/s; "
          f"replica set {', '.join(members)}, home {home}")
    print(f"  {name} killed (SIGKILL) at {killed_at:.1f} s, started again at {restarted_at:.1f} s, "
          f"answering at {serving_at:.1f} s")
    print(f"  reads: {result['ok']} ok, failed {result['failed']} "
          f"({100.0 * failed / max(total, 1):.3f} %); p50 {result['p50_ms']:.2f} ms, "
          f"p99 {result['p99_ms']:.2f} ms, p99.9 {result['p999_ms']:.2f} ms, max {result['max_ms']:.1f} ms")
    for when, label in (("before", "before the kill"), ("down", f"while {name} was down"),
                        ("after", "after it came back")):
        print(f"  answered by, {label}: {served_by[when]}")
    slowest = sorted(probes, key=lambda p: -p[1])[:3]
    print("  slowest probes: " + ", ".join(f"{ms * 1000:.0f} ms at {t:.1f} s ({who})" for t, ms, who in slowest))
    print(f"  writes: {len(acked)} acknowledged, refused {refused or 'none'}")
    if VICTIM == "cell":
        print(f"  {len(missed)} acknowledged while {home} was down: "
              + (f"all on it {replayed_at - serving_at:.1f} s after it answered again" if replayed_at
                 else "NOT all on it 60 s after it answered again"))
    lost = {c: sorted(set(acked) - docs) for c, docs in held.items() if not set(acked) <= docs}
    print(f"  every acknowledged write on every member at the end: {'yes' if not lost else f'NO, missing {lost}'} "
          f"({', '.join(f'{c} holds {len(d)}' for c, d in held.items())})")
    if lost or failed or (VICTIM == "cell" and replayed_at is None):
        sys.exit(1)


if __name__ == "__main__":
    main()
