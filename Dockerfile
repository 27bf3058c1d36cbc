# Gatehouse container image.
#
#   docker build -t gatehouse .
#   docker run --rm -p 9000:9000 -v gatehouse-data:/var/lib/gatehouse \
#       -e GATEHOUSE_EXAMPLE_SERVICE_SECRET=... gatehouse
#
# The default command runs the authorization server with config/auth.yaml. Other subcommands
# work the same way, e.g.
#   docker run --rm -v gatehouse-data:/var/lib/gatehouse gatehouse clients list --data-dir /var/lib/gatehouse
#   docker run --rm -v $PWD/config:/srv/gatehouse/config:ro gatehouse gateway --config /srv/gatehouse/config/compose/gateway.yaml
# docker-compose.yml runs the whole cluster from this one image (auth, gateway, migrate); deploy/kubernetes too.
#
# Plain Dockerfile syntax only (no BuildKit cache mounts), so the legacy builder that
# docker-compose v1 uses can build it too.

# The toolchain the code is developed and tested with (swift --version: 6.3.1); the runtime is the same Debian
# release, so the binary's glibc matches.
ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# Build stage
# ---------------------------------------------------------------------------------------------
FROM ${SWIFT_IMAGE} AS build

WORKDIR /build

# Resolve dependencies first, in a layer that only changes when the manifest does.
# Package.resolved is not copied (see .dockerignore): it is gitignored and the one in a
# developer's tree may pin revisions of a local package mirror.
COPY Package.swift ./
RUN swift package resolve

COPY Sources ./Sources
COPY Tests ./Tests

# Static Swift runtime and Foundation: the binary needs nothing beyond glibc (and libstdc++,
# which every Debian image has). The resource bundles (page templates) must sit next to the
# executable, where Bundle.module looks for them on Linux. Run-time exclusivity checks are off, as in
# scripts/build-release.sh (which explains why).
RUN swift build -c release --product gatehouse --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked \
    && bin="$(swift build -c release --product gatehouse --static-swift-stdlib -Xswiftc -enforce-exclusivity=unchecked --show-bin-path)" \
    && mkdir -p /staging \
    && cp "$bin/gatehouse" /staging/ \
    && find -L "$bin/" -maxdepth 1 -name '*.resources' -type d -exec cp -Ra {} /staging/ \; \
    && cp /usr/libexec/swift/linux/swift-backtrace-static /staging/ \
    && echo "--- staged files:" && ls -la /staging \
    && echo "--- dynamic dependencies of gatehouse:" && ldd /staging/gatehouse

# ---------------------------------------------------------------------------------------------
# Runtime stage
# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}

# ca-certificates: outbound TLS; tzdata: time zone database for Foundation;
# curl: the container healthcheck (GET /healthz). Versions follow the base image's point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates tzdata curl \
    && rm -rf /var/lib/apt/lists/*

# Fixed ids so that volumes and bind mounts can be prepared on the host (chown 10001:10001).
RUN groupadd --system --gid 10001 gatehouse \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/gatehouse --shell /usr/sbin/nologin gatehouse \
    && install -d -o gatehouse -g gatehouse -m 0750 /var/lib/gatehouse

COPY --from=build /staging/ /usr/local/bin/

WORKDIR /srv/gatehouse
COPY config/ ./config/

# Fail the image build if the binary cannot start in this image (missing shared libraries).
RUN ["/usr/local/bin/gatehouse", "--help"]

# Crash reports from the static binary (symbolicated backtrace on stderr, no interaction).
ENV SWIFT_BACKTRACE=enable=yes,sanitize=yes,threads=all,images=all,interactive=no,swift-backtrace=/usr/local/bin/swift-backtrace-static

VOLUME ["/var/lib/gatehouse"]
# The gatehouse user, by number: Kubernetes' runAsNonRoot can only check a numeric USER.
USER 10001:10001
# Authorization server 9000 (admin 9902), gateway 8080 (admin 9901): the ports of config/compose/*.yaml and the
# Kubernetes ConfigMaps. Documentation only; the configuration decides.
EXPOSE 9000 9902 8080 9901

ENTRYPOINT ["/usr/local/bin/gatehouse"]
CMD ["auth", "--config", "/srv/gatehouse/config/auth.yaml", "--data-dir", "/var/lib/gatehouse"]
