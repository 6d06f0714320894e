# syntax=docker/dockerfile:1
# taskbridge in a container: a Rust build stage, then a small Debian runtime that runs
# `taskbridge serve` as an unprivileged user. See docs/OPERATIONS.md.
#
#   docker build -t taskbridge .
#   docker volume create taskbridge-data
#   docker run --rm -v taskbridge-data:/var/lib/taskbridge taskbridge init
#   docker run -d --name taskbridge -v taskbridge-data:/var/lib/taskbridge \
#     -p 8081:8081 -p 127.0.0.1:8082:8082 \
#     -e TASKBRIDGE_EXCHANGE_URL=https://mail.contoso.com/EWS/Exchange.asmx \
#     -e TASKBRIDGE_LISTENER_PUBLIC_URL=https://taskbridge.contoso.com/ews/notify \
#     taskbridge

ARG RUST_VERSION=1.90
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds; the binary is copied out of the cache.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin taskbridge \
    && install -m 0755 target/release/taskbridge /usr/local/bin/taskbridge

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: the system roots TLS verification trusts; curl: the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 taskbridge \
    && useradd --system --uid 10001 --gid taskbridge --home-dir /var/lib/taskbridge \
       --shell /usr/sbin/nologin taskbridge \
    && install -d -m 0700 -o taskbridge -g taskbridge /var/lib/taskbridge
COPY --from=build /usr/local/bin/taskbridge /usr/local/bin/taskbridge

# Everything lives in the volume: the configuration `taskbridge init` writes, the PM store, the
# sync state and the secrets. Any key can be set with a TASKBRIDGE_* variable instead of
# editing the file; the listener and the admin endpoint listen on all of the container's
# addresses (publish the admin port on an internal address only).
ENV TASKBRIDGE_CONFIG=/var/lib/taskbridge/taskbridge.toml \
    TASKBRIDGE_DATA_DIR=/var/lib/taskbridge \
    TASKBRIDGE_LISTENER_LISTEN=0.0.0.0:8081 \
    TASKBRIDGE_ADMIN_LISTEN=0.0.0.0:8082
WORKDIR /var/lib/taskbridge
VOLUME ["/var/lib/taskbridge"]
USER taskbridge:taskbridge
EXPOSE 8081 8082

# /healthz on the admin port answers 200 once the connector is up.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["curl", "--fail", "--silent", "--show-error", "--max-time", "4", "http://127.0.0.1:8082/healthz"]

ENTRYPOINT ["/usr/local/bin/taskbridge"]
CMD ["serve"]
