#!/usr/bin/env bash
# Installs what building, running and testing need and is missing:
# etcd, Redis, protoc and protobuf's well-known types, openssl, Chromium and
# ChromeDriver (Debian packages), the embedding model's files and a PostgreSQL
# with pgvector (scripts/fetch-postgres.sh).
set -euo pipefail

missing=()
command -v etcd >/dev/null         || missing+=(etcd-server)
command -v etcdctl >/dev/null      || missing+=(etcd-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v protoc >/dev/null       || missing+=(protobuf-compiler)
# etcd-client's protos import protobuf's well-known types, which protoc finds here.
[[ -f /usr/include/google/protobuf/descriptor.proto ]] || missing+=(libprotobuf-dev)
command -v python3 >/dev/null      || missing+=(python3 python3-pip)
command -v openssl >/dev/null      || missing+=(openssl)
# The dashboard's browser test drives headless Chromium through WebDriver.
command -v chromium >/dev/null     || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)

if (( ${#missing[@]} )); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system-wide redis-server; this project runs its own on ports of its own.
fi

command -v cargo >/dev/null || { echo "setup: cargo (Rust) is required" >&2; exit 1; }

"$(dirname "$0")/fetch-model.sh"
"$(dirname "$0")/fetch-postgres.sh"

# The official OpenAI SDK, for the test that drives the router with it. Optional:
# without it (no PyPI access) that one test says it was skipped.
venv="$HOME/.cache/cellnet/venv"
if ! "$venv/bin/python" -c "import openai" 2>/dev/null; then
  echo "setup: installing the openai Python SDK into $venv" >&2
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q openai; } \
    || echo "setup: could not install the openai SDK; its test will be skipped" >&2
fi

# Offline validation of the rendered Kubernetes manifests against the
# Kubernetes schemas; without it that part of the manifest test is skipped.
if ! "$venv/bin/python" -c "import kubernetes_validate" 2>/dev/null; then
  echo "setup: installing kubernetes-validate into $venv" >&2
  { [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv"; } && "$venv/bin/pip" install -q kubernetes-validate \
    || echo "setup: could not install kubernetes-validate; schema validation will be skipped" >&2
fi

# checkov scans the rendered manifests for pod-security mistakes; it has a
# venv of its own (its pins would fight the others'). Without it that test
# is skipped.
checkov_venv="$HOME/.cache/cellnet/checkov"
if [[ ! -x "$checkov_venv/bin/checkov" ]]; then
  echo "setup: installing checkov into $checkov_venv" >&2
  { python3 -m venv "$checkov_venv" && "$checkov_venv/bin/pip" install -q checkov; } \
    || echo "setup: could not install checkov; the manifest scan will be skipped" >&2
fi
