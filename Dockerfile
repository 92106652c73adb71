# syntax=docker/dockerfile:1
#
# sparklet image: multi-stage build. Needs BuildKit (default in current Docker)
# for the cache mounts.
#
#   docker build -t sparklet:0.1.0 .   # the version in Cargo.toml
#   docker run --rm sparklet:0.1.0 run --help

FROM rust:1-bookworm AS builder

# Build deps of rdkafka's bundled librdkafka (features "ssl" and "libz";
# built with its own configure script, so no cmake) and of openssl-sys.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential libssl-dev pkg-config zlib1g-dev python3 perl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY . .

# target/ is a cache mount, so copy the binary out of it within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/app/target \
    cargo build --release --locked --bin sparklet \
    && cp target/release/sparklet /usr/local/bin/sparklet

FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
    && rm -rf /var/lib/apt/lists/*

# Non-root user and group 10001 (the Kubernetes manifests' runAsUser,
# runAsGroup and fsGroup). The checkpoint directory exists in the image and
# belongs to that user, so a named volume mounted on it starts out writable.
RUN groupadd --system --gid 10001 sparklet \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/sparklet \
        --shell /usr/sbin/nologin sparklet \
    && mkdir -p /var/lib/sparklet/checkpoints /etc/sparklet \
    && chown -R sparklet:sparklet /var/lib/sparklet

COPY --from=builder /usr/local/bin/sparklet /usr/local/bin/sparklet
COPY sql/ /etc/sparklet/sql/

ENV SPARKLET_SQL_DIR=/etc/sparklet/sql
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/sparklet
VOLUME ["/var/lib/sparklet/checkpoints"]

ENTRYPOINT ["sparklet"]
CMD ["--help"]
