#!/usr/bin/env bash
# A Python peer gateway under the same load: the LiteLLM proxy in front of the
# provider simulator, against the simulator directly, at each rate in RATES.
# Its added latency compares with the router's (scripts/bench-router.sh).
#
# Needs the system running (`make up`) and the LiteLLM proxy, which this
# script installs into ~/.cache/cellnet/litellm-venv when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
RATES="${RATES:-200 1000}"
DURATION="${DURATION:-20s}"
LITELLM_PORT="${LITELLM_PORT:-18400}"
bin_dir="${CARGO_TARGET_DIR:-$root/target}/${CELLNET_PROFILE:-release}"
[[ -f .local/demo.env ]] || { echo "bench-litellm: start the system first (make up)" >&2; exit 1; }
# shellcheck disable=SC1091
source .local/demo.env

venv="$HOME/.cache/cellnet/litellm-venv"
if [[ ! -x "$venv/bin/litellm" ]]; then
  echo "bench-litellm: installing litellm[proxy] into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'litellm[proxy]'
fi

work="$(mktemp -d)"
master_key="sk-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
trap 'kill "$proxy_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: azure/gpt-4o-mini
      api_base: $SIM_URL/azure-eastus
      api_key: $SIM_PROVIDER_KEY
      api_version: "2024-10-21"
litellm_settings:
  telemetry: false
general_settings:
  master_key: $master_key
YAML
"$venv/bin/litellm" --config "$work/litellm.yaml" --host 127.0.0.1 --port "$LITELLM_PORT" \
  > "$work/litellm.log" 2>&1 &
proxy_pid=$!
deadline=$((SECONDS + 120))
until curl -fsS -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 2>/dev/null; do
  (( SECONDS < deadline )) || { echo "bench-litellm: the proxy did not start:" >&2; tail -20 "$work/litellm.log" >&2; exit 1; }
  sleep 0.5
done

chat='{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "<context>\n[1] Orders ship from our warehouse in Lyon.\n</context>\nQuestion: Where do orders ship from?"}]}'
direct_url="$SIM_URL/azure-eastus/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
echo "LiteLLM $("$venv/bin/litellm" --version 2>/dev/null | awk 'NF{v=$NF} END{print v}') on $(nproc) cores; $DURATION per run"
for rate in $RATES; do
  proxied="$("$bin_dir/loadgen" --url "http://127.0.0.1:$LITELLM_PORT/v1/chat/completions" --rate "$rate" \
    --duration "$DURATION" --body "$chat" -H "Authorization: Bearer $master_key" --json)"
  direct="$("$bin_dir/loadgen" --url "$direct_url" --rate "$rate" --duration "$DURATION" \
    --body "$chat" -H "api-key: $SIM_PROVIDER_KEY" --json)"
  rss_kib="$(ps -o rss= --ppid "$proxy_pid" -p "$proxy_pid" | awk '{s+=$1} END {print s}')"
  python3 - "$rate" "$proxied" "$direct" "$rss_kib" <<'PY'
import json, sys
rate, r, d, rss = int(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
print(f"rate {rate}/s  LiteLLM RSS {rss/1024:.1f} MiB")
for name, x in (("litellm", r), ("sim direct", d)):
    print(f"  {name:12} ok {x['ok']:>7} failed {x['failed']}  achieved {x['achieved_rate']:.0f}/s  "
          f"p50 {x['p50_ms']:.3f}  p99 {x['p99_ms']:.3f}  p99.9 {x['p999_ms']:.3f}  max {x['max_ms']:.3f} ms")
print(f"  added        p50 {r['p50_ms']-d['p50_ms']:+.3f}  p99 {r['p99_ms']-d['p99_ms']:+.3f}  "
      f"p99.9 {r['p999_ms']-d['p999_ms']:+.3f} ms")
PY
done
