# Controller image: the slipway-controller binary plus the OpenSSH client it drives.
# docker build -t slipway-controller:0.1.0 .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p slipway-controller

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/slipway-controller /usr/local/bin/slipway-controller
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/slipway-controller"]
