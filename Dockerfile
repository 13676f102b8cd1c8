# syntax=docker/dockerfile:1
# The etcd-operator image: the release binary on distroless (glibc, no shell), running as the
# nonroot user 65532. Build from the repository root: docker build -t etcd-operator:dev .
FROM rust:1.95-bookworm AS builder
# etcd-client's build script compiles etcd's protos: protoc and the well-known types.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin etcd-operator

# etcdutl (static) from etcd's official image: `verify: true` backups run its offline
# `snapshot status` on each upload (--snapshot-tool-dir, default /usr/local/bin).
FROM gcr.io/etcd-development/etcd:v3.5.16 AS etcd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/etcd-operator /etcd-operator
COPY --from=etcd /usr/local/bin/etcdutl /usr/local/bin/etcdutl
USER 65532:65532
ENTRYPOINT ["/etcd-operator"]
