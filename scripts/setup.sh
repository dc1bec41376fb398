#!/usr/bin/env bash
# Installs what building, running and testing need and is missing:
# etcd, Redis, protoc (Debian packages) and the embedding model's files.
set -euo pipefail

missing=()
command -v etcd >/dev/null         || missing+=(etcd-server)
command -v etcdctl >/dev/null      || missing+=(etcd-client)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v protoc >/dev/null       || missing+=(protobuf-compiler)
command -v python3 >/dev/null      || missing+=(python3 python3-pip)

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
