# Two commands for a fresh machine: `make up` runs the whole system locally,
# `make test` runs the test suite. Both install what is missing first.

CARGO ?= cargo

.PHONY: up down test setup build lint fmt bench-router bench-moves chaos-region-outage chaos-cell-kill chaos-redis-kill chaos-etcd-kill chaos-scale-out chaos-drain

up: setup build
	scripts/up.sh

down:
	scripts/down.sh

test: setup
	$(CARGO) fmt --all --check
	$(CARGO) build --workspace --bins
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace

setup:
	scripts/setup.sh

build:
	$(CARGO) build --workspace --bins

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

# Router overhead under open-loop load; needs `CELLNET_PROFILE=release make up` running.
bench-router:
	$(CARGO) build --release --workspace --bins
	scripts/bench-router.sh

# Tenant moves on a whole system of release binaries: one tenant of 10k and
# of 100k points, and a drain of a cell holding 50 tenants under query load.
bench-moves:
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p e2e --bench moves

# A region outage under steady load; needs `CELLNET_PROFILE=release make up` running.
chaos-region-outage:
	$(CARGO) build --release --workspace --bins
	python3 chaos/scenarios/region_outage.py

# A cell, Redis or etcd killed under load and started again; needs
# `CELLNET_PROFILE=release make up` running.
chaos-cell-kill chaos-redis-kill chaos-etcd-kill:
	$(CARGO) build --release --workspace --bins
	python3 chaos/scenarios/kill_under_load.py $(patsubst chaos-%-kill,%,$@)

# Cells added (3 → 4 → 5) or one drained and removed under reads and writes of
# 50 tenants, with a destination cell and the control plane killed mid-move;
# needs `CELLNET_PROFILE=release CELLNET_COPY_RATE=20 make up` running (a fresh
# one for each; the low copy rate keeps copies long enough to kill one mid-way).
chaos-scale-out chaos-drain:
	$(CARGO) build --release --workspace --bins
	python3 chaos/scenarios/cells_move.py $(patsubst chaos-%,%,$@)
