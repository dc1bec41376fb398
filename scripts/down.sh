#!/usr/bin/env bash
# Stops everything `make up` started.
set -euo pipefail
cd "$(dirname "$0")/.."
pids=".local/pids"
if [[ ! -f $pids ]]; then echo "down: nothing is running"; exit 0; fi
# Router first, etcd last: reverse start order.
tac "$pids" | while read -r pid; do kill "$pid" 2>/dev/null || true; done
for _ in $(seq 50); do
  alive=0
  while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$pids"
  (( alive )) || break
  sleep 0.1
done
while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done < "$pids"
rm -f "$pids"
echo "down: stopped"
