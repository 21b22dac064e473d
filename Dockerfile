# syntax=docker/dockerfile:1
# Waymark's container image: the `waymark` binary on a distroless, non-root runtime (glibc,
# no shell, no package manager). The Helm chart runs it with `waymark run`.
#
#   docker build -t waymark:0.1.0 .
#   docker run --rm -p 8080:8080 -p 5353:5353/udp -p 9090:9090 waymark:0.1.0   # waymark serve
#
# No image is published; build it and push it to your registry (chart value
# image.repository). Needs BuildKit (the default builder of current Docker).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
# protoc: the etcd client crate compiles etcd's protos at build time.
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit cache mounts); the binary
# is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin waymark \
    && install -D -m 0755 target/release/waymark /out/usr/local/bin/waymark \
    && install -d -m 0755 /out/var/lib/waymark

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/waymark /usr/local/bin/waymark
# The registry's directory, writable by the non-root user (a volume is usually mounted here).
COPY --from=build --chown=65532:65532 /out/var/lib/waymark /var/lib/waymark
# Listen on every interface inside the container (the binary's defaults are loopback),
# keep the registry under /var/lib/waymark/data, and log without colour codes.
ENV WAYMARK_API_ADDR=0.0.0.0:8080 \
    WAYMARK_DNS_ADDR=0.0.0.0:5353 \
    WAYMARK_METRICS_ADDR=0.0.0.0:9090 \
    WAYMARK_DATA_DIR=/var/lib/waymark/data \
    NO_COLOR=1
USER 65532:65532
EXPOSE 8080/tcp 5353/udp 5353/tcp 9090/tcp
ENTRYPOINT ["/usr/local/bin/waymark"]
CMD ["serve"]
