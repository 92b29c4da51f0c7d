# LDLM server image: `docker build -t ldlm .` then `docker run -p 3144:3144 ldlm`.
# Multi-stage: a Rust build stage, then a small Debian runtime with the three binaries only.
# (Not built in CI: no Docker engine runs on the project's machines; see README "Packaging".)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# The whole workspace (minus .dockerignore): Cargo needs every member's manifest. The proto is
# compiled by protox (pure Rust), so no protoc is needed; ring and mimalloc build with the gcc
# the image has.
COPY . .
RUN cargo build --release --locked -p ldlm-cli --bin ldlm-server --bin ldlm-lock --bin ldlm-bench \
    && mkdir /out \
    && cp target/release/ldlm-server target/release/ldlm-lock target/release/ldlm-bench /out/ \
    && strip /out/*

FROM debian:bookworm-slim
# ca-certificates: the system roots, for --client_cert_verify and ldlm-bench --tls.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system ldlm \
    && useradd --system --gid ldlm --home-dir /var/lib/ldlm --shell /usr/sbin/nologin ldlm \
    && install -d -o ldlm -g ldlm -m 0750 /var/lib/ldlm
COPY --from=build /out/ /usr/local/bin/
USER ldlm
WORKDIR /var/lib/ldlm
# Listen on every interface inside the container (the server's own default is localhost). Any
# other option: -e LDLM_<OPTION>=... or flags after the image name (`docker run ldlm --password
# s3cret`). To keep held locks across restarts, mount a volume on /var/lib/ldlm and set
# LDLM_STATE_FILE=/var/lib/ldlm/ldlm.state. The IPC socket stays at its default
# (/tmp/ldlm-ipc.sock): `docker exec <container> ldlm-lock list`.
ENV LDLM_LISTEN_ADDRESS=0.0.0.0:3144
EXPOSE 3144
# SIGTERM (docker stop) is a graceful shutdown.
STOPSIGNAL SIGTERM
ENTRYPOINT ["ldlm-server"]
