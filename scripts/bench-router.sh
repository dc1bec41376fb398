#!/usr/bin/env bash
# What the router adds: the same open-loop load (loadgen) through the router
# and straight to the tenant's cell (requests signed as a router would), at
# each rate in RATES, reporting p50/p99/p99.9 of both and the router's memory.
# ROUNDS=N repeats each rate N times, every other round direct first, and
# reports the median added latency. MAX_CONNECTIONS=N caps the generator's
# connections (by default it opens one for every request that finds none free).
#
# Needs the system running (`CELLNET_PROFILE=release make up` for numbers
# worth recording). The request is a question the cell answers from its
# exact cache tier: one Redis round trip, no model, no provider.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
RATES="${RATES:-1000 5000}"
DURATION="${DURATION:-20s}"
ROUNDS="${ROUNDS:-1}"
cap=()
[[ -n "${MAX_CONNECTIONS:-}" ]] && cap=(--max-connections "$MAX_CONNECTIONS")
bin_dir="${CARGO_TARGET_DIR:-$root/target}/${CELLNET_PROFILE:-release}"
[[ -f .local/demo.env ]] || { echo "bench-router: start the system first (make up)" >&2; exit 1; }
# shellcheck disable=SC1091
source .local/demo.env
export ADMIN_URL ADMIN_TOKEN
etcd_port="${ETCD_PORT:-12379}"

tenant="bench-$(date +%s)"
key="$("$bin_dir/cellctl" tenants create "$tenant" --plan enterprise --quiet)"
# Limits far above the load, so that the limiter's work is measured, not its refusals.
"$bin_dir/cellctl" tenants set "$tenant" --rps 1000000 --burst 1000000 >/dev/null
auth=(-H "Authorization: Bearer $key" -H 'content-type: application/json')
deadline=$((SECONDS + 15))
until curl -fsS -o /dev/null -X DELETE "$ROUTER_URL/v1/cache" "${auth[@]}" 2>/dev/null; do
  (( SECONDS < deadline )) || { echo "bench-router: tenant never became usable" >&2; exit 1; }
  sleep 0.1
done
curl -fsS -o /dev/null "$ROUTER_URL/v1/documents" "${auth[@]}" \
  -d '{"documents": [{"id": "shipping", "text": "Orders ship from our warehouse in Lyon. Delivery takes three to five days."}]}'
body='{"query": "Where do orders ship from?"}'
# The first answer fills the cache; the cell that served it is the one to load directly.
cell="$(curl -fsS -D - -o /dev/null "$ROUTER_URL/v1/query" "${auth[@]}" -d "$body" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cellnet-cell"{print $2}')"
cache="$(curl -fsS "$ROUTER_URL/v1/query" "${auth[@]}" -d "$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cache"])')"
[[ "$cache" == hit ]] || { echo "bench-router: the warm-up question is not a cache hit ($cache)" >&2; exit 1; }
cell_url="$("$bin_dir/cellctl" cells list | awk -v c="$cell" '$1==c{for(i=1;i<=NF;i++) if ($i ~ /^http:/) print $i}' | head -1)"
[[ -n "$cell_url" ]] || { echo "bench-router: cannot find the endpoint of $cell" >&2; exit 1; }
cell_key="$(etcdctl --endpoints "http://127.0.0.1:$etcd_port" get /cellnet/secrets/cell-auth --print-value-only)"
router_pid="$(pgrep -f "$bin_dir/router" | head -1)"

echo "tenant $tenant on $cell ($cell_url); $(nproc) cores; $DURATION per run; $ROUNDS round(s) per rate"
# CPU seconds (user + system) the router has used so far.
router_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$router_pid/stat"; }
through_router() {
  cpu_before="$(router_cpu)"
  via_router="$("$bin_dir/loadgen" --url "$ROUTER_URL/v1/query" --rate "$rate" --duration "$DURATION" \
    --body "$body" -H "Authorization: Bearer $key" "${cap[@]}" --json)"
  cpu_after="$(router_cpu)"
  rss_kib="$(awk '/VmRSS/{print $2}' "/proc/$router_pid/status")"
}
straight_to_cell() {
  direct="$("$bin_dir/loadgen" --url "$cell_url/v1/query" --rate "$rate" --duration "$DURATION" \
    --body "$body" --cell-key-hex "$cell_key" --tenant "$tenant" "${cap[@]}" --json)"
}
added_file="$(mktemp)"
trap 'rm -f "$added_file"' EXIT
for rate in $RATES; do
  : > "$added_file"
  for round in $(seq "$ROUNDS"); do
    # Every other round the other way round, so that a host getting busier
    # or quieter during a round does not always favour the same side.
    if (( round % 2 == 1 )); then through_router; straight_to_cell; else straight_to_cell; through_router; fi
    python3 - "$rate" "$via_router" "$direct" "$rss_kib" "$cpu_before" "$cpu_after" "$added_file" <<'PY'
import json, sys
rate, r, d, rss = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
cpu = float(sys.argv[6]) - float(sys.argv[5])
per_request = cpu / max(1, r['ok'] + sum(r['failed'].values())) * 1e6
print(f"rate {rate}/s  router RSS {rss/1024:.1f} MiB  router CPU {per_request:.0f} us/request")
for name, x in (("router", r), ("cell direct", d)):
    print(f"  {name:12} ok {x['ok']:>7} failed {x['failed']}  achieved {x['achieved_rate']:.0f}/s  "
          f"p50 {x['p50_ms']:.3f}  p99 {x['p99_ms']:.3f}  p99.9 {x['p999_ms']:.3f}  max {x['max_ms']:.3f} ms")
added = [r[k] - d[k] for k in ('p50_ms', 'p99_ms', 'p999_ms')]
print(f"  added        p50 {added[0]:+.3f}  p99 {added[1]:+.3f}  p99.9 {added[2]:+.3f} ms")
with open(sys.argv[7], 'a') as f:
    f.write(json.dumps(added) + "\n")
PY
  done
  if (( ROUNDS > 1 )); then
    python3 - "$rate" "$added_file" <<'PY'
import json, statistics, sys
rounds = [json.loads(line) for line in open(sys.argv[2])]
median = [statistics.median(r[i] for r in rounds) for i in range(3)]
print(f"rate {sys.argv[1]}/s  median added over {len(rounds)} rounds: "
      f"p50 {median[0]:+.3f}  p99 {median[1]:+.3f}  p99.9 {median[2]:+.3f} ms")
PY
  fi
done
