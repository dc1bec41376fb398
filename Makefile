# Two commands for a fresh machine: `make up` runs the whole system locally,
# `make test` runs the test suite. Both install what is missing first.

CARGO ?= cargo

.PHONY: up down test setup build lint fmt bench-router chaos-region-outage chaos-cell-kill chaos-redis-kill chaos-etcd-kill

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

# A region outage under steady load; needs `CELLNET_PROFILE=release make up` running.
chaos-region-outage:
	$(CARGO) build --release --workspace --bins
	python3 chaos/scenarios/region_outage.py

# A cell, Redis or etcd killed under load and started again; needs
# `CELLNET_PROFILE=release make up` running.
chaos-cell-kill chaos-redis-kill chaos-etcd-kill:
	$(CARGO) build --release --workspace --bins
	python3 chaos/scenarios/kill_under_load.py $(patsubst chaos-%-kill,%,$@)
