# syntax=docker/dockerfile:1
# Shoal: a multi-stage image (docs/scaling.md). Build from the repository root:
#   docker build -t shoal:latest .
# The build stage runs the same command as docs/scaling.md and
# scripts/local-cluster.sh; tests/lb/deploy.rs checks that they agree.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own that is rebuilt only when a manifest or
# the lock file changes: the workspace's manifests, the patched engine, and stub
# sources where the real ones will go (the load tool and the test kit are workspace
# members, so their manifests must be there; only the server is built).
COPY Cargo.toml Cargo.lock ./
COPY shoal-bench/Cargo.toml shoal-bench/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
COPY vendor vendor
RUN mkdir -p src shoal-bench/src testkit/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > shoal-bench/src/main.rs && touch testkit/src/lib.rs \
    && cargo build --release --locked -p shoal \
    && rm -rf src shoal-bench/src testkit/src
# Then the sources; migrations are compiled into the binary (sqlx::migrate!).
COPY src src
COPY migrations migrations
COPY shoal-bench/src shoal-bench/src
COPY testkit/src testkit/src
# The stubs' build outputs are newer than the copied sources: make cargo rebuild.
RUN touch src/main.rs src/lib.rs
RUN cargo build --release --locked -p shoal

FROM debian:bookworm-slim
# curl for the container health check; ca-certificates for TLS to managed services.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/shoal --create-home shoal
COPY --from=build /src/target/release/shoal /usr/local/bin/shoal
USER 10001
ENV HOST=0.0.0.0 \
    PORT=8080 \
    LOG_FORMAT=json \
    DATA_DIR=/var/lib/shoal
EXPOSE 8080
# SIGTERM (Docker's default stop signal) starts Shoal's graceful drain; give it
# SHUTDOWN_TIMEOUT (`docker stop -t`, `stop_grace_period` in compose).
HEALTHCHECK --interval=5s --timeout=2s --retries=3 \
    CMD curl -fs http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["/usr/local/bin/shoal"]
CMD ["serve"]
