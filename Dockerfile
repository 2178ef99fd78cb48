# serverless-executor: release binary + the pinned workerd from npm. The executor runs as the
# non-root user `executor` (10001) and starts every workerd as the separate user `sandbox`
# (10002), which cannot read the data directory or the key file. Switching users needs
# CAP_SETUID/CAP_SETGID/CAP_CHOWN/CAP_KILL (file capabilities below, all in Docker's default set;
# do not combine with --security-opt no-new-privileges). Job slots need a writable, delegated
# cgroup v2 subtree (README, "Sandbox containment"): without one the executor is not ready
# unless EXECUTOR_ALLOW_UNLIMITED_SLOTS=true.

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
    && apt-get install -y --no-install-recommends ca-certificates curl libcap2-bin \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/executor executor \
    && groupadd --system --gid 10002 sandbox \
    && useradd --system --uid 10002 --gid 10002 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sandbox \
    && mkdir -p /var/lib/executor/data /var/lib/executor/sandbox /etc/executor \
    && chown -R executor /var/lib/executor /etc/executor \
    && chmod 0700 /var/lib/executor/data /etc/executor
COPY --from=build /src/target/release/serverless-executor /usr/local/bin/serverless-executor
COPY --from=tools /tools/node_modules/@cloudflare/workerd-linux-64/bin/workerd /usr/local/bin/workerd
# Just what starting workerd as `sandbox` takes (and cgroupfs writes in a delegated subtree).
RUN setcap cap_setuid,cap_setgid,cap_chown,cap_kill,cap_dac_override+ep /usr/local/bin/serverless-executor
# The public API (read-only routes, metrics, health) is exposed, and in tee mode the secret
# listener (POST /inject-secret; not bound in v2 mode); the admin API stays on the container's
# loopback: configure with `docker exec <container> serverless-executor client …`.
# EXECUTOR_SECRET_LISTEN_ADDR is an address, not a secret (DL3064 goes by the name).
# hadolint ignore=DL3064
ENV EXECUTOR_LISTEN_ADDR=0.0.0.0 \
    EXECUTOR_PORT=6001 \
    EXECUTOR_ADMIN_LISTEN_ADDR=127.0.0.1 \
    EXECUTOR_ADMIN_PORT=6002 \
    EXECUTOR_SECRET_LISTEN_ADDR=0.0.0.0:6003 \
    EXECUTOR_WORKERD_PATH=/usr/local/bin/workerd \
    EXECUTOR_DATA_DIR=/var/lib/executor/data \
    EXECUTOR_SANDBOX_DIR=/var/lib/executor/sandbox \
    EXECUTOR_ENCLAVE_KEY_FILE=/etc/executor/enclave.key \
    EXECUTOR_SANDBOX_UID=10002 \
    EXECUTOR_SANDBOX_GID=10002
USER 10001
WORKDIR /var/lib/executor
EXPOSE 6001 6003
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:6001/health"]
ENTRYPOINT ["/usr/local/bin/serverless-executor"]
CMD ["serve"]
