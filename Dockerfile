# slcs container image: build the release binary, run it as a non-root user
# with the data directory on a volume. See docs/operations.md ("Running with
# Docker").

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the binary is built from (certs/profile.toml is compiled in).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY certs ./certs
RUN cargo build --release --locked

# --- run ---------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid so that mounted files (a production CA key, mode 0600) can
# be owned by it, and so that orchestrators can verify runAsNonRoot.
RUN groupadd --system --gid 10001 slcs \
 && useradd --system --uid 10001 --gid slcs --home-dir /var/lib/slcs \
      --no-create-home --shell /usr/sbin/nologin slcs \
 && install -d -o slcs -g slcs -m 0700 /var/lib/slcs
COPY --from=build /src/target/release/slcs /usr/local/bin/slcs

# Every SLCS_* variable must be a configuration key (unknown ones are errors).
ENV SLCS_DATA_DIR=/var/lib/slcs \
    SLCS_SERVER_LISTEN=0.0.0.0:8443
# A new named volume starts as a copy of this directory: owned by slcs, 0700.
VOLUME ["/var/lib/slcs"]
USER 10001:10001
EXPOSE 8443
# No HEALTHCHECK: the slim image has no HTTP client. Probe
# https://<host>:8443/healthz from the orchestrator or monitoring instead.
# SIGTERM (the default stop signal) drains in-flight requests for
# server.shutdown_grace_secs (30 s) and flushes the store.
ENTRYPOINT ["slcs"]
CMD ["serve"]
