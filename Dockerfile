# serverless-executor: release binary + the pinned workerd from npm, run as a non-root user.
# Cgroup job slots need a writable cgroup tree (e.g. --cgroupns=private with a delegated
# cgroup v2, or run privileged); without one the executor runs jobs unlimited and says so.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY contracts ./contracts
COPY examples ./examples
RUN cargo build --release --locked --bin serverless-executor

FROM node:20-bookworm-slim AS tools
WORKDIR /tools
COPY tools/package.json tools/package-lock.json ./
RUN (npm ci --no-audit --no-fund --omit=dev || npm install --no-audit --no-fund --no-save --omit=dev) \
    && test -x node_modules/@cloudflare/workerd-linux-64/bin/workerd

FROM debian:bookworm-slim
# Unpinned on purpose: the slim base's security updates should apply on every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/executor executor \
    && mkdir -p /var/lib/executor/data /etc/executor \
    && chown -R executor /var/lib/executor
COPY --from=build /src/target/release/serverless-executor /usr/local/bin/serverless-executor
COPY --from=tools /tools/node_modules/@cloudflare/workerd-linux-64/bin/workerd /usr/local/bin/workerd
# The public API (read-only routes, metrics, health) is exposed; the admin API stays on the
# container's loopback: configure with `docker exec <container> serverless-executor client …`.
ENV EXECUTOR_LISTEN_ADDR=0.0.0.0 \
    EXECUTOR_PORT=6001 \
    EXECUTOR_ADMIN_LISTEN_ADDR=127.0.0.1 \
    EXECUTOR_ADMIN_PORT=6002 \
    EXECUTOR_WORKERD_PATH=/usr/local/bin/workerd \
    EXECUTOR_DATA_DIR=/var/lib/executor/data \
    EXECUTOR_SANDBOX_DIR=/var/lib/executor/sandbox \
    EXECUTOR_ENCLAVE_KEY_FILE=/etc/executor/enclave.key
USER 10001
WORKDIR /var/lib/executor
EXPOSE 6001
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:6001/health"]
ENTRYPOINT ["/usr/local/bin/serverless-executor"]
CMD ["serve"]
