# syntax=docker/dockerfile:1
# Multi-stage build: dependencies compile in a layer of their own (rebuilt only when
# Cargo.toml/Cargo.lock change), the runtime image is slim and runs as a non-root user.

# Images are pinned: a rebuild next month builds the same thing. The toolchain is the
# `rust-version` of Cargo.toml or newer.
FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
# 1. Dependencies only: a stub crate with the real manifests. The manifest also names test
#    and bench targets; empty stubs let it parse (they are never built here). A test
#    (`tests/api/cli.rs`) checks that every target path of Cargo.toml is stubbed here.
COPY Cargo.toml Cargo.lock ./
# The C flags mimalloc is built with (see .cargo/config.toml).
COPY .cargo ./.cargo
RUN mkdir -p src tests/api benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs tests/api/main.rs tests/store_contract.rs tests/sandbox.rs tests/faults.rs benches/turns.rs \
 && cargo build --release --locked --bin palaver \
 && rm -rf src
# 2. The crate itself (migrations are embedded at compile time).
COPY migrations ./migrations
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin palaver \
 && cp target/release/palaver /usr/local/bin/palaver

FROM debian:12.11-slim AS runtime
# python3 with numpy, pandas and matplotlib is the code_interpreter's interpreter (run in
# palaver's Landlock sandbox; see the README).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
      python3 python3-numpy python3-pandas python3-matplotlib \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data --create-home palaver
COPY --from=build /usr/local/bin/palaver /usr/local/bin/palaver
USER palaver
WORKDIR /data
# On its own the image keeps SQLite in /data: mount a volume there (`-v palaver-data:/data`)
# to keep it. No VOLUME instruction: it would leave an anonymous volume behind every
# container, also under compose, where the data lives in Postgres.
ENV PALAVER_ADDR=0.0.0.0:8000 \
    DATABASE_URL=sqlite:///data/palaver.db \
    RUST_LOG=info
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["palaver", "health"]
ENTRYPOINT ["palaver"]
CMD ["serve"]
