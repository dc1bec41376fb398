#!/usr/bin/env bash
# Puts a PostgreSQL 16 with pgvector 0.6.2 (initdb, pg_ctl, postgres, psql and
# the `vector` extension) into $CELLNET_PG_DIR, taken from the PyPI wheel
# pgserver: Debian has no pgvector for its own PostgreSQL. The default place
# is /usr/local/lib/cellnet/postgresql for root, whose server runs as
# `nobody` and so must be able to read it, else ~/.cache/cellnet/postgresql.
# Prints nothing when it is there already. Idempotent.
set -euo pipefail

version=0.1.4
if [[ -n "${CELLNET_PG_DIR:-}" ]]; then
  dest="$CELLNET_PG_DIR"
elif [[ $(id -u) -eq 0 ]]; then
  dest=/usr/local/lib/cellnet/postgresql
else
  dest="$HOME/.cache/cellnet/postgresql"
fi
if [[ "$(cat "$dest/.pgserver-version" 2>/dev/null)" == "$version" && -x "$dest/pgserver/pginstall/bin/postgres" ]]; then
  exit 0
fi

command -v python3 >/dev/null || { echo "fetch-postgres: python3 is required" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-postgres: downloading pgserver $version from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: "pgserver==$version" -d "$tmp"
rm -rf "$dest.part"
mkdir -p "$dest.part"
# The binaries find their libraries relative to themselves, so the layout of
# the wheel is kept; file modes too (zipfile alone drops the exec bits).
python3 - "$tmp" "$dest.part" <<'PY'
import glob, os, sys, zipfile
src, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{src}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if not info.filename.startswith(("pgserver/pginstall/", "pgserver.libs/")):
            continue
        path = z.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
PY
chmod -R a+rX "$dest.part"
echo "$version" > "$dest.part/.pgserver-version"
rm -rf "$dest"
mv "$dest.part" "$dest"
echo "fetch-postgres: PostgreSQL with pgvector in $dest/pgserver/pginstall/bin" >&2
