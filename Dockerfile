# syntax=docker/dockerfile:1
# Shoal: a multi-stage image (docs/scaling.md). Build from the repository root:
#   docker build -t shoal:latest .
# The build stage runs the same command as docs/scaling.md and
# scripts/local-cluster.sh; tests/lb/deploy.rs checks that they agree.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Migrations are compiled into the binary (sqlx::migrate!), so nothing else is copied.
RUN cargo build --release --locked

FROM debian:bookworm-slim
# curl for the container health check; ca-certificates for TLS to managed services.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/shoal --create-home shoal
COPY --from=build /src/target/release/shoal /usr/local/bin/shoal
USER shoal
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
