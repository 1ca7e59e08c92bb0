# syntax=docker/dockerfile:1
#
# Images of the local stack (docker-compose.yml, docs/docker.md). Targets:
#
#   dashboard (default)  the `redstream` binary of redstream-cli, running `redstream serve`
#   demo                 the demo producer and consumer of examples/
#
#   docker build -t redstream .
#   docker build --target demo -t redstream-demo .
#
# Needs BuildKit (the default builder since Docker 23). Its cache mounts keep the cargo registry
# and the target directory from one build to the next, so a change to the sources recompiles
# the workspace's crates, not the dependencies. The images run as an unprivileged user on
# debian:bookworm-slim, the Debian release of the builder, so the binaries find the glibc they
# were linked against.

ARG RUST_VERSION=1

FROM rust:${RUST_VERSION}-slim-bookworm AS source
WORKDIR /src
# .dockerignore keeps target/, .git and local secrets (.env) out of the context.
COPY . .

# The target directory is a cache mount that is gone after the RUN step, so each build copies
# its binaries out to /out in the same step.
FROM source AS build-cli
RUN --mount=type=cache,id=redstream-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=redstream-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=redstream-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p redstream-cli \
    && install -D -m 0755 target/release/redstream /out/redstream

FROM source AS build-demo
RUN --mount=type=cache,id=redstream-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=redstream-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=redstream-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p redstream-examples \
        --example demo_producer --example demo_consumer \
    && install -D -m 0755 target/release/examples/demo_producer /out/demo_producer \
    && install -D -m 0755 target/release/examples/demo_consumer /out/demo_consumer

# The runtime base: CA certificates (for rediss:// URLs) and an unprivileged user, nothing else.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 redstream \
    && useradd --system --uid 10001 --gid redstream --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin redstream
# Numeric, so that "must not run as root" checks can verify it without reading /etc/passwd.
USER 10001:10001
LABEL org.opencontainers.image.source="https://github.com/redstream-rs/redstream" \
      org.opencontainers.image.licenses="MIT"

# docker-compose.yml runs `demo_producer` and `demo_consumer` from this image.
FROM runtime AS demo
COPY --from=build-demo /out/ /usr/local/bin/
CMD ["demo_producer"]

# Last, so that it is the default target.
FROM runtime AS dashboard
COPY --from=build-cli /out/redstream /usr/local/bin/redstream
# In a container the dashboard listens on all interfaces, or the published port could not reach
# it. What keeps it local is publishing that port on 127.0.0.1 only (-p 127.0.0.1:8090:8090).
EXPOSE 8090
ENTRYPOINT ["redstream"]
CMD ["serve", "--listen", "0.0.0.0:8090"]
