# The cellnet binaries (router, cell, control-plane, cellctl, cell-operator) and the
# embedding model in one slim, non-root image; the manifests in k8s/ run it.
# Not built on the machines this project is developed on (no Docker engine
# there), so keep it minimal.

FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin router --bin cell --bin control-plane --bin cellctl --bin cell-operator \
    && CELLNET_MODEL_DIR=/opt/cellnet/models/all-MiniLM-L6-v2 scripts/fetch-model.sh

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin cellnet
COPY --from=build /src/target/release/router /src/target/release/cell \
     /src/target/release/control-plane /src/target/release/cellctl \
     /src/target/release/cell-operator /usr/local/bin/
COPY --from=build /opt/cellnet/models /opt/cellnet/models
ENV CELLNET_MODEL_DIR=/opt/cellnet/models/all-MiniLM-L6-v2
USER 10001:10001
ENTRYPOINT []
