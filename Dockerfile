# Controller image: the slipway-controller binary, the OpenSSH client it drives, and tini as PID 1
# (it reaps the `ssh -f` masters, which are re-parented to PID 1 when they exit).
#   docker build -t slipway-controller:0.1.0 .
# Without a registry, e2e/scripts/controller-image.sh builds the same image from debootstrap and
# `docker import`: keep the two in step (packages, passwd/group lines, HOME, USER, ENTRYPOINT).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p slipway-controller

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 # OpenSSH refuses to run for a uid without a passwd entry ("No user exists for uid 65532").
 && echo 'slipway:x:65532:65532:Slipway controller:/home/slipway:/usr/sbin/nologin' >>/etc/passwd \
 && echo 'slipway:x:65532:' >>/etc/group \
 && install -d -o 65532 -g 65532 -m 0700 /home/slipway
COPY --from=build /src/target/release/slipway-controller /usr/local/bin/slipway-controller
USER 65532:65532
# The root filesystem is read-only in the chart: /home/slipway and /tmp are emptyDir volumes there.
ENV HOME=/home/slipway
WORKDIR /home/slipway
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/slipway-controller"]
