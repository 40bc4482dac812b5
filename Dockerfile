# Conflux node image: multi-stage; the runtime stage is distroless and runs as non-root (65532).
# Build from the repository root:   docker build -t conflux:dev .
# It has not been built on the project's machines, which have no container engine.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ENV CARGO_TARGET_DIR=/target
RUN cargo build --release --locked --bin conflux \
 && install -D -m 0755 /target/release/conflux /out/conflux

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/conflux /usr/local/bin/conflux
USER 65532:65532
EXPOSE 7000 7001
VOLUME /var/lib/conflux
ENTRYPOINT ["/usr/local/bin/conflux"]
CMD ["serve", "--data-dir", "/var/lib/conflux", "--listen", "0.0.0.0:7000", "--peer-listen", "0.0.0.0:7001"]
