# EventflowDB server image: Debian 12 for both stages.
#
#   docker build -t eventflowdb .
#   docker volume create eventflowdb
#   docker run -d --name eventflowdb -v eventflowdb:/data \
#     -p 6543:6543 -p 16543:16543 -p 26543:26543 eventflowdb
#
# (podman: the same commands; README.md, "Deployment", has more.)
# Configuration is only through the server's environment variables (README.md,
# "Configuration"); the image sets DATA=/data and nothing else.

# ---------------------------------------------------------------------------
# Build stage: the README's Release build, then the unit tests. A failing
# test fails the image build.
#
# Only the unit tests (ctest -L unit) run here: the integration tests would
# need Debian's Python gRPC stack in this stage, and they already run on the
# host against the same sources (scripts/test, under ASan). The finished
# image is driven over gRPC and HTTP by tests/deploy/test_image.py.
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev cmake ninja-build pkg-config \
      libuv1-dev libprotobuf-c-dev protobuf-c-compiler libnghttp2-dev liblmdb-dev libck-dev \
      libhttp-parser-dev libjansson-dev libmimalloc-dev libcmocka-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build/release \
 && ctest --test-dir build/release --output-on-failure -L unit -j "$(nproc)" \
 && strip -o /eventflowdb build/release/transport/eventflowdb

# ---------------------------------------------------------------------------
# Runtime stage: the binary and the shared libraries it links, nothing else.
FROM debian:bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libprotobuf-c1 libnghttp2-14 liblmdb0 libck0 libjansson4 libhttp-parser2.9 \
      libmimalloc2.0 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log \
 && groupadd --gid 10001 eventflowdb \
 && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /data \
      --shell /usr/sbin/nologin eventflowdb \
 && mkdir /data && chown 10001:10001 /data && chmod 0750 /data

COPY --from=build /eventflowdb /usr/local/bin/eventflowdb
# Fails the build here, not at the first start, if a shared library is missing.
RUN /usr/local/bin/eventflowdb --help >/dev/null

# A new named volume takes /data's owner from the image, so the non-root
# server can write it. Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
ENV DATA=/data
VOLUME /data
# gRPC, HTTP/JSON (with /healthz and /readyz), Prometheus /metrics.
EXPOSE 6543 16543 26543

# SIGTERM: stop accepting, GOAWAY, finish in-flight calls (at most 5 s), close
# the data folder, exit 0. The server is PID 1 and handles it itself (no
# init needed); docker stop's default 10 s and Kubernetes' 30 s are ample.
STOPSIGNAL SIGTERM

# /healthz over bash's /dev/tcp: the image carries no curl. Follows HTTP_PORT.
# (podman keeps HEALTHCHECK only with `podman build --format docker`.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HTTP_PORT:-16543} && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r -t 2 proto code rest <&3 && [ \"$code\" = 200 ]"]

ENTRYPOINT ["/usr/local/bin/eventflowdb"]
