# syntax=docker/dockerfile:1
# freshet in a container: a builder stage that runs the same release build as everywhere else
# (`cargo build --release --locked`), and a slim runtime with the binary alone.
#
#   docker build -t freshet .
#   docker run --rm -p 8080:8080 -v "$PWD/config/demo.toml:/etc/freshet/freshet.toml:ro" \
#     -e FRESHET_KAFKA__BROKERS=kafka:9092 -e FRESHET_JWT_SECRET=... \
#     -e FRESHET_AUTH__MODE=jwt -e FRESHET_AUTH__ISSUER=https://issuer.example \
#     -e FRESHET_AUTH__AUDIENCE=freshet -e FRESHET_AUTH__HS256_SECRET_ENV=FRESHET_JWT_SECRET \
#     -e FRESHET_AUTH__RESOURCE=http://localhost:8080/mcp freshet
#
# The server listens on 0.0.0.0:8080 here, which freshet only accepts with auth.mode = "jwt"
# (see README, "Container"). Written for Docker, but not built by this project's CI, which
# has no container engine; CI runs the same cargo command natively.

FROM rust:1.95-slim-bookworm AS builder
# rdkafka-sys builds librdkafka 2.3.0 from source with its own ./configure and make: it wants
# a C and a C++ compiler, make, python3 (it generates a linker script) and pkg-config, and
# links OpenSSL and zlib from the system. zstd-sys compiles its bundled C with gcc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ make python3 pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bins \
 && cp target/release/freshet /usr/local/bin/freshet

FROM debian:bookworm-slim
# libssl3 and zlib1g: linked by librdkafka; ca-certificates: TLS to brokers (SASL_SSL);
# curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/freshet --create-home freshet
COPY --from=builder /usr/local/bin/freshet /usr/local/bin/freshet
# Snapshots and the audit log. Config: mount a file at /etc/freshet/freshet.toml; any key can
# also come from FRESHET_<SECTION>__<KEY> variables.
ENV FRESHET_SERVER__HTTP_ADDR=0.0.0.0:8080 \
    FRESHET_SERVER__DATA_DIR=/var/lib/freshet
VOLUME ["/var/lib/freshet"]
WORKDIR /var/lib/freshet
USER freshet
EXPOSE 8080
# Liveness; /readyz (200 once caught up with the stream) is for orchestrators' readiness.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["freshet"]
CMD ["serve", "--config", "/etc/freshet/freshet.toml"]
