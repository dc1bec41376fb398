"""Region outage under steady load, against a running `make up` system.

Open-loop load (loadgen) of questions that each miss the cache, so every one
reaches a provider. While it runs:
  10 s  the region that served most of the baseline goes down (simulator outage)
  30 s  it comes back
  50 s  every region goes down
  60 s  every region comes back
The simulator's counters are sampled every 100 ms. Printed: how fast cells
stopped sending to the downed region, the failures seen by clients, when
traffic returned, and whether the all-regions-down phase produced any 5xx.

Usage: python3 chaos/scenarios/region_outage.py [RATE]   (default 40 requests/s)
"""

import json
import subprocess
import sys
import threading
import time
import urllib.request

from system import BIN, ENV, cellctl

RATE = int(sys.argv[1]) if len(sys.argv) > 1 else 40
REGIONS = ["azure-eastus", "azure-westeurope", "vertex-us-central1"]


def http(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def faults(region, profile):
    http("PUT", f"{ENV['SIM_URL']}/sim/regions/{region}/faults", profile)


def stats():
    return http("GET", f"{ENV['SIM_URL']}/sim/stats")["regions"]


def main():
    tenant = f"outage-{int(time.time())}"
    key = cellctl("tenants", "create", tenant, "--plan", "enterprise", "--quiet")
    cellctl("tenants", "set", tenant, "--rps", "100000", "--burst", "100000")
    auth = {"Authorization": f"Bearer {key}"}
    deadline = time.time() + 15
    while True:
        try:
            http("POST", f"{ENV['ROUTER_URL']}/v1/documents", {"documents": [{
                "id": "shipping",
                "text": "Shipping. Orders ship from our warehouse in Lyon. "
                        "Standard delivery takes three to five days."}]}, auth)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    for r in REGIONS:
        faults(r, {})

    samples = []  # (t, {region: (requests, failed)})
    stop = threading.Event()
    start = time.time()

    def sample():
        while not stop.is_set():
            s = stats()
            samples.append((time.time() - start,
                            {r: (s[r]["requests"], s[r]["failed"]) for r in REGIONS if r in s}))
            time.sleep(0.1)

    states = []  # (t, {region: published state})

    def watch_states():
        headers = {"Authorization": f"Bearer {ENV['ADMIN_TOKEN']}"}
        while not stop.is_set():
            listed = http("GET", f"{ENV['ADMIN_URL']}/admin/providers", headers=headers)
            states.append((time.time() - start, {
                p["id"]: ("drained" if p["drained"] else (p.get("health") or {}).get("state", "-"))
                for p in listed["providers"]}))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    watcher = threading.Thread(target=watch_states, daemon=True)
    watcher.start()
    load = subprocess.Popen(
        [BIN / "loadgen", "--url", f"{ENV['ROUTER_URL']}/v1/query", "--rate", str(RATE),
         "--duration", "62s", "--warmup", "0s", "--timeout", "30s", "--json",
         "--body", '{"query": "Where do orders ship from? (reference {i})"}',
         "-H", f"Authorization: Bearer {key}"],
        stdout=subprocess.PIPE, text=True)

    def at(t):
        time.sleep(max(0.0, start + t - time.time()))

    at(10)
    base = samples[-1][1]
    first = {r: samples[0][1][r][0] for r in REGIONS}
    primary = max(REGIONS, key=lambda r: base[r][0] - first[r])
    faults(primary, {"outage": True})
    t_down = time.time() - start
    at(30)
    faults(primary, {})
    t_up = time.time() - start
    at(50)
    for r in REGIONS:
        faults(r, {"outage": True})
    at(60)
    for r in REGIONS:
        faults(r, {})
    result = json.loads(load.communicate()[0])
    stop.set()
    sampler.join()
    watcher.join()

    def series(region, i):
        return [(t, c[region][i]) for t, c in samples]

    fails = series(primary, 1)

    def failed_between(t0, t1):
        pts = [v for t, v in fails if t0 <= t <= t1]
        return pts[-1] - pts[0] if len(pts) > 1 else 0

    during = [(t, v) for t, v in fails if t_down <= t < t_up]
    first_fail = next((t for (t, v), (_, p) in zip(during[1:], during) if v > p), t_down)
    published = next((t for t, s in states if t >= t_down and s.get(primary) in ("down", "degraded")), None)
    published_as = next((s[primary] for t, s in states if t == published), "-")
    served = series(primary, 0)
    back = next((t for (t, v), (_, p) in zip(served[1:], served) if t > t_up and v > p), None)
    healthy_again = next((t for t, s in states if t >= t_up and s.get(primary) == "healthy"), None)
    others = [r for r in REGIONS if r != primary]

    def rate(region, t0, t1):
        pts = [(t, c[region][0]) for t, c in samples if t0 <= t <= t1]
        return (pts[-1][1] - pts[0][1]) / max(pts[-1][0] - pts[0][0], 1e-9) if len(pts) > 1 else 0.0

    print(f"load: {RATE}/s for 62 s, every request a cache miss; primary region: {primary}")
    print(f"  outage at {t_down:.1f} s; first failed attempt at {first_fail:.1f} s; "
          f"leader published it {published_as} at {published:.1f} s" if published else
          f"  outage at {t_down:.1f} s; first failed attempt at {first_fail:.1f} s; never published unhealthy")
    moved = sum(rate(r, first_fail, first_fail + 1.0) for r in others)
    print(f"  answers/s from the other regions in the second after the first failure: {moved:.0f} "
          f"({', '.join(others)}; offered {RATE}/s)")
    if published:
        print(f"  failed attempts on {primary}: {failed_between(t_down, published)} before publication, "
              f"{failed_between(published, t_up)} in the {t_up - published:.0f} s after it (probes)")
    print(f"  recovered at {t_up:.1f} s: published healthy at {healthy_again:.1f} s, serving from {back:.1f} s"
          if back and healthy_again else f"  recovered at {t_up:.1f} s: healthy {healthy_again}, serving {back}")
    total = result["ok"] + sum(result["failed"].values())
    failed = sum(result["failed"].values())
    print(f"  clients: {result['ok']} ok, failed {result['failed']} "
          f"({100.0 * failed / max(total, 1):.2f} %), p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms")
    print("  every region down 50-60 s: answers come from the stale cache or degrade;"
          f" 5xx over the whole run: {sum(v for k, v in result['failed'].items() if k.startswith('5'))}")


if __name__ == "__main__":
    main()
