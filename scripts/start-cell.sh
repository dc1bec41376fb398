#!/usr/bin/env bash
# Starts one more cell next to what `make up` runs: scripts/start-cell.sh ID REGION PORT.
# The cell registers as joining; the control-plane leader moves its share of
# tenants onto it and then marks it active (`cellctl cells list` shows it).
# `make down` stops it with the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
local_dir="$root/.local"
[[ $# -eq 3 ]] || { echo "usage: scripts/start-cell.sh ID REGION PORT" >&2; exit 64; }
id="$1" region="$2" port="$3"
[[ $id =~ ^[a-z0-9-]+$ ]] || { echo "start-cell: the id must be lowercase letters, digits and '-'" >&2; exit 64; }
[[ -f "$local_dir/config/cell.yaml.in" ]] || { echo "start-cell: nothing is running; make up first" >&2; exit 1; }
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "start-cell: port $port is already in use" >&2; exit 1
fi
bin_dir="$(cat "$local_dir/bin_dir")"
# shellcheck disable=SC1091
source "$local_dir/demo.env" 2>/dev/null || true
export SIM_PROVIDER_KEY="${SIM_PROVIDER_KEY:?start-cell: SIM_PROVIDER_KEY is not set}"

# Cells in us-east ask Azure East US first; the others Azure West Europe.
if [[ $region == us-east ]]; then first=eastus second=westeurope; else first=westeurope second=eastus; fi
sed -e "s/@ID@/$id/g" -e "s/@REGION@/$region/g" -e "s/@PORT@/$port/g" \
    -e "s/@FIRST@/$first/g" -e "s/@SECOND@/$second/g" \
    "$local_dir/config/cell.yaml.in" > "$local_dir/config/$id.yaml"
nohup "$bin_dir/cell" --config "$local_dir/config/$id.yaml" \
  > "$local_dir/logs/$id.out" 2> "$local_dir/logs/$id.log" < /dev/null &
echo $! >> "$local_dir/pids"
if [[ ${START_CELL_WAIT:-1} == 1 ]]; then
  deadline=$((SECONDS + 60))
  until grep -q '^READY ' "$local_dir/logs/$id.out" 2>/dev/null; do
    if (( SECONDS > deadline )) || ! kill -0 "$!" 2>/dev/null; then
      echo "start-cell: $id did not start; its log:" >&2; tail -20 "$local_dir/logs/$id.log" >&2; exit 1
    fi
    sleep 0.1
  done
fi
