#!/usr/bin/env bash
# Starts the whole system on this machine and leaves it running:
# etcd, Redis, the provider simulator, the control plane, three cells in two
# regions and two routers (in production, N replicas behind one address). Creates two demo tenants, ingests the project's docs
# and writes .local/demo.env. `make down` stops everything.
#
# Ports are configurable through the environment (defaults below); start-up
# refuses if one is taken. Binaries come from the cargo target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
local_dir="$root/.local"

ETCD_PORT="${ETCD_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
REDIS_PORT="${REDIS_PORT:-16379}"
SIM_PORT="${SIM_PORT:-18200}"
ADMIN_PORT="${ADMIN_PORT:-18090}"
ROUTER_PORT="${ROUTER_PORT:-18080}"
ROUTER_PORT_2="${ROUTER_PORT_2:-18081}"
CELL_PORTS="${CELL_PORTS:-18101 18102 18103}"

# CELLNET_PROFILE=release runs optimised binaries (build them with cargo build --release).
bin_dir="${CARGO_TARGET_DIR:-$root/target}/${CELLNET_PROFILE:-debug}"
for b in router cell control-plane cellctl provider-sim terraform-provider-cellnet; do
  [[ -x "$bin_dir/$b" ]] || { echo "up: $bin_dir/$b missing; run 'make build' first" >&2; exit 1; }
done

if [[ -f "$local_dir/pids" ]] && xargs -r kill -0 < "$local_dir/pids" 2>/dev/null; then
  echo "up: the system is already running (make down stops it)" >&2
  exit 1
fi

port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $ETCD_PORT $ETCD_PEER_PORT $REDIS_PORT $SIM_PORT $ADMIN_PORT $ROUTER_PORT $ROUTER_PORT_2 $CELL_PORTS; do
  if port_taken "$p"; then
    echo "up: port $p is already in use; choose others (ETCD_PORT, ETCD_PEER_PORT, REDIS_PORT, SIM_PORT, ADMIN_PORT, ROUTER_PORT, ROUTER_PORT_2, CELL_PORTS)" >&2
    exit 1
  fi
done

rm -rf "$local_dir"
mkdir -p "$local_dir"/{logs,config,data}
: > "$local_dir/pids"
# scripts/start-cell.sh starts more cells from the same binaries.
echo "$bin_dir" > "$local_dir/bin_dir"

# Terraform takes the cellnet provider from a filesystem mirror of this
# build (there is no registry to take it from): TF_CLI_CONFIG_FILE points at it.
tf_version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
tf_platform="linux_$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"
tf_package="$local_dir/terraform-mirror/registry.terraform.io/cellnet/cellnet/$tf_version/$tf_platform"
mkdir -p "$tf_package"
ln -s "$bin_dir/terraform-provider-cellnet" "$tf_package/terraform-provider-cellnet_v$tf_version"
cat > "$local_dir/terraformrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$local_dir/terraform-mirror"
    include = ["registry.terraform.io/cellnet/cellnet"]
  }
  direct {
    exclude = ["registry.terraform.io/cellnet/cellnet"]
  }
}
TFRC

# start NAME CMD... : runs CMD in the background, logging to .local/logs/NAME.
start() {
  local name="$1"; shift
  nohup "$@" > "$local_dir/logs/$name.out" 2> "$local_dir/logs/$name.log" < /dev/null &
  echo $! >> "$local_dir/pids"
}

# wait_ready NAME : waits for the service's READY line (or fails with its log).
wait_ready() {
  local name="$1" deadline=$((SECONDS + 60))
  until grep -q '^READY ' "$local_dir/logs/$name.out" 2>/dev/null; do
    if (( SECONDS > deadline )); then
      echo "up: $name did not start; its log:" >&2; tail -20 "$local_dir/logs/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
}

wait_port() {
  local name="$1" port="$2" deadline=$((SECONDS + 30))
  until port_taken "$port"; do
    if (( SECONDS > deadline )); then echo "up: $name did not open port $port" >&2; exit 1; fi
    sleep 0.1
  done
}

echo "starting etcd on $ETCD_PORT"
start etcd etcd --name local --data-dir "$local_dir/data/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT"
echo "starting redis on $REDIS_PORT"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$local_dir/data"
wait_port etcd "$ETCD_PORT"
wait_port redis "$REDIS_PORT"

ADMIN_TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PROVIDER_KEY="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
export CELLNET_ADMIN_TOKEN="$ADMIN_TOKEN" SIM_PROVIDER_KEY="$PROVIDER_KEY"
etcd_section="etcd: { endpoints: [\"http://127.0.0.1:$ETCD_PORT\"], prefix: /cellnet/ }"

# A service-account key for the simulated Vertex AI, as Google would issue it:
# cells sign token requests with it, the simulator's token endpoint checks them.
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$local_dir/config/vertex-sa.pem" 2>/dev/null
python3 - "$local_dir/config/vertex-sa.pem" "http://127.0.0.1:$SIM_PORT/oauth2/token" > "$local_dir/config/vertex-sa.json" <<'PY'
import json, sys
print(json.dumps({
    "type": "service_account", "project_id": "cellnet-local", "private_key_id": "local",
    "private_key": open(sys.argv[1]).read(),
    "client_email": "cellnet@cellnet-local.iam.gserviceaccount.com", "token_uri": sys.argv[2],
}))
PY
rm -f "$local_dir/config/vertex-sa.pem"
chmod 600 "$local_dir/config/vertex-sa.json"

cat > "$local_dir/config/provider-sim.yaml" <<YAML
listen: 127.0.0.1:$SIM_PORT
api_key: "$PROVIDER_KEY"
service_account_key_files: ["$local_dir/config/vertex-sa.json"]
regions:
  - { name: azure-eastus, deployments: [gpt-4o, gpt-4o-mini] }
  - { name: azure-westeurope, deployments: [gpt-4o, gpt-4o-mini] }
  - { name: vertex-us-central1, deployments: [gemini-2.0-flash, gemini-2.0-flash-lite] }
YAML
echo "starting provider simulator on $SIM_PORT"
start provider-sim "$bin_dir/provider-sim" --config "$local_dir/config/provider-sim.yaml"

cat > "$local_dir/config/control-plane.yaml" <<YAML
listen: 127.0.0.1:$ADMIN_PORT
$etcd_section
# Before copying a tenant, the leader checks that the source owes it no hints
# or queued ingestion jobs.
redis: { url: "redis://127.0.0.1:$REDIS_PORT" }
# CELLNET_COPY_RATE caps the points a second a tenant move copies.
placement: { copy_points_per_second: ${CELLNET_COPY_RATE:-20000}, cleanup_grace: 5s }
YAML
echo "starting control plane on $ADMIN_PORT"
start control-plane "$bin_dir/control-plane" --config "$local_dir/config/control-plane.yaml"

# Every cell's config, with @ID@, @REGION@, @PORT@ and the provider order
# (@FIRST@, @SECOND@) left to fill in: scripts/start-cell.sh starts one more
# cell from it, as the chaos scenarios do.
sim="http://127.0.0.1:$SIM_PORT"
cat > "$local_dir/config/cell.yaml.in" <<YAML
id: @ID@
region: @REGION@
template: ${CELL_TEMPLATE:-standard}
listen: 127.0.0.1:@PORT@
data_dir: $local_dir/data/@ID@
$etcd_section
redis: { url: "redis://127.0.0.1:$REDIS_PORT" }
embedding: { lru_capacity: ${CELL_EMBEDDING_LRU:-8192} }
providers:
  - { kind: azure_openai, name: azure-@FIRST@, region: @FIRST@, endpoint: "$sim/azure-@FIRST@", deployment: gpt-4o-mini, api_key_env: SIM_PROVIDER_KEY }
  - { kind: azure_openai, name: azure-@SECOND@, region: @SECOND@, endpoint: "$sim/azure-@SECOND@", deployment: gpt-4o-mini, api_key_env: SIM_PROVIDER_KEY }
  - { kind: vertex_ai, name: vertex-us-central1, region: us-central1, endpoint: "$sim/vertex-us-central1", project: cellnet-local, location: us-central1, model: gemini-2.0-flash, auth: { service_account_key_file: "$local_dir/config/vertex-sa.json" } }
prices:
  gpt-4o-mini: { input_per_million: 0.15, output_per_million: 0.60 }
  gemini-2.0-flash: { input_per_million: 0.15, output_per_million: 0.60 }
# A second model judges a sample of fresh answers (CELL_QUALITY_SAMPLE, 0 to 1).
quality_check: { sample: ${CELL_QUALITY_SAMPLE:-0.1}, provider: vertex-us-central1 }
YAML
i=0
regions=(eu-west us-east eu-west)
for port in $CELL_PORTS; do
  i=$((i + 1)); region="${regions[$(( (i - 1) % 3 ))]}"
  echo "starting cell-$i ($region) on $port"
  START_CELL_WAIT=0 scripts/start-cell.sh "cell-$i" "$region" "$port"
done

cat > "$local_dir/config/router.yaml" <<YAML
listen: 127.0.0.1:$ROUTER_PORT
$etcd_section
redis: { url: "redis://127.0.0.1:$REDIS_PORT" }
YAML
sed "s/^listen: .*/listen: 127.0.0.1:$ROUTER_PORT_2/" "$local_dir/config/router.yaml" > "$local_dir/config/router-2.yaml"
echo "starting routers on $ROUTER_PORT and $ROUTER_PORT_2"
start router "$bin_dir/router" --config "$local_dir/config/router.yaml"
start router-2 "$bin_dir/router" --config "$local_dir/config/router-2.yaml"

for name in provider-sim control-plane router router-2 $(seq -f 'cell-%g' 1 "$i"); do wait_ready "$name"; done
for port in $ROUTER_PORT $ROUTER_PORT_2; do
  deadline=$((SECONDS + 30))
  until curl -fsS "http://127.0.0.1:$port/readyz" 2>/dev/null | grep -q "ok: $i cells"; do
    (( SECONDS < deadline )) || { echo "up: the router on $port never saw $i cells" >&2; exit 1; }
    sleep 0.1
  done
done

ROUTER_URL="http://127.0.0.1:$ROUTER_PORT"
ROUTER_URL_2="http://127.0.0.1:$ROUTER_PORT_2"
ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
export ADMIN_URL ADMIN_TOKEN
API_KEY="$("$bin_dir/cellctl" tenants create acme --quiet)"
API_KEY_2="$("$bin_dir/cellctl" tenants create globex --quiet)"

cat > "$local_dir/demo.env" <<ENV
ROUTER_URL=$ROUTER_URL
ROUTER_URL_2=$ROUTER_URL_2
API_KEY=$API_KEY
API_KEY_2=$API_KEY_2
ADMIN_URL=$ADMIN_URL
ADMIN_TOKEN=$ADMIN_TOKEN
DASHBOARD_URL=$ADMIN_URL/dashboard
SIM_URL=http://127.0.0.1:$SIM_PORT
SIM_PROVIDER_KEY=$PROVIDER_KEY
TF_CLI_CONFIG_FILE=$local_dir/terraformrc
ENV

# Ingest the project's own docs for the first tenant (waiting until every
# component has seen the new tenant).
payload="$(python3 - "$root" <<'PY'
import json, sys, pathlib
root = pathlib.Path(sys.argv[1])
docs = []
for rel in ["README.md", "docs/architecture.md"]:
    p = root / rel
    if p.exists():
        docs.append({"id": rel, "text": p.read_text(), "metadata": {"path": rel}})
print(json.dumps({"documents": docs}))
PY
)"
deadline=$((SECONDS + 15))
until out="$(curl -fsS -X POST "$ROUTER_URL/v1/documents" -H "Authorization: Bearer $API_KEY" -H 'content-type: application/json' -d "$payload" 2>&1)"; do
  (( SECONDS < deadline )) || { echo "up: ingesting the demo documents failed: $out" >&2; exit 1; }
  sleep 0.2
done
echo "ingested: $out"

cat <<MSG

The system is up. Credentials are in .local/demo.env; logs in .local/logs/.

Dashboard: $ADMIN_URL/dashboard
  sign in with the operator token: $ADMIN_TOKEN
  a region outage to watch it react to: Azure West Europe, the eu-west cells' first
  choice, goes down; fresh questions (the filter keeps them out of the cache) fail over
  to Azure East US and the dashboard shows the region down within seconds; then it
  comes back (after source .local/demo.env):
  curl -s -X PUT \$SIM_URL/sim/regions/azure-westeurope/faults -H 'content-type: application/json' -d '{"outage": true}'
  for i in \$(seq 20); do curl -s -o /dev/null \$ROUTER_URL/v1/query -H "Authorization: Bearer \$API_KEY" \\
       -H 'content-type: application/json' -d '{"query": "What does make up start?", "filter": {"path": "README.md"}}'; done
  curl -s -X PUT \$SIM_URL/sim/regions/azure-westeurope/faults -H 'content-type: application/json' -d '{}'

  source .local/demo.env
  curl -s \$ROUTER_URL/v1/query -H "Authorization: Bearer \$API_KEY" \\
       -H 'content-type: application/json' \\
       -d '{"query": "What does make up start?", "top_k": 5}'

Ask the same question again for a cache hit; \$API_KEY_2 is a second tenant
that sees none of the first one's documents. OpenAI SDKs work with base URL
\$ROUTER_URL/v1 and the tenant's key as API key:

  curl -s \$ROUTER_URL/v1/chat/completions -H "Authorization: Bearer \$API_KEY" \\
       -H 'content-type: application/json' \\
       -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What does make up start?"}]}'

\$ROUTER_URL_2 is a second router: it sends every tenant to the same cells.

Operators (after source .local/demo.env):
  $bin_dir/cellctl cells list
  $bin_dir/cellctl placement
  scripts/start-cell.sh cell-4 us-east 18104    # a new cell joins; tenants move onto it
  $bin_dir/cellctl cells drain cell-4 --wait && $bin_dir/cellctl cells remove cell-4
  $bin_dir/cellctl plan --users 100000 --docs 10000000 --queries-per-user-per-day 5 --template large

Terraform (after set -a; source .local/demo.env; set +a):
  cd terraform/examples/local && terraform init && terraform apply    # tenants, and cell-4's record
  scripts/start-cell.sh cell-4 us-east 18104    # (from the repository) cell-4 joins
  terraform destroy                             # cell-4 drained, then removed; tenants deleted
Stop everything with: make down
MSG
