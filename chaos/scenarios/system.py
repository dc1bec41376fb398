"""The running `make up` system, as the chaos scenarios reach it: its
addresses and credentials (.local/demo.env), its binaries, and `cellctl`."""

import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
LOCAL = ROOT / ".local"
ENV = dict(
    line.split("=", 1)
    for line in (LOCAL / "demo.env").read_text().splitlines()
    if "=" in line
)
BIN = pathlib.Path(
    os.environ.get("CARGO_TARGET_DIR", ROOT / "target")
) / os.environ.get("CELLNET_PROFILE", "release")


def cellctl(*args):
    env = dict(os.environ, ADMIN_URL=ENV["ADMIN_URL"], ADMIN_TOKEN=ENV["ADMIN_TOKEN"])
    return subprocess.run([BIN / "cellctl", *args], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
