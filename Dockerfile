# Postern: edge, broker, connector, policy (and the demo native service) in
# one image. Each container runs one of them:
#   docker run postern postern-edge --config /etc/postern/edge.yaml
#
# Build stage: Debian bookworm with the -dev packages. Runtime stage:
# bookworm-slim with only the shared libraries the binaries link, found from
# the binaries themselves so the two stages cannot drift apart.
# Offline machines: tests/docker/make-base-image.sh builds both base images
# with debootstrap, and this file builds unchanged.

FROM debian:bookworm AS build
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libboost1.81-dev libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      prometheus-cpp-dev libssl-dev libyaml-cpp-dev zlib1g-dev libjemalloc-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY services services
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DPOSTERN_BUILD_TESTS=OFF >/dev/null \
 && cmake --build /build -j"$(nproc)" \
      --target postern-edge postern-broker postern-connector postern-policy postern-demo \
 && mkdir -p /out \
 && for b in edge broker connector policy demo; do strip -o /out/postern-$b /build/bin/postern-$b; done \
 && ldd /out/postern-* | awk '/=> \//{print $3}' | sort -u \
      | while read -r lib; do dpkg -S "$lib" 2>/dev/null || dpkg -S "$(realpath "$lib")"; done \
      | cut -d: -f1 | sort -u | grep -vx 'libc6' > /out/runtime-packages.txt \
 && cat /out/runtime-packages.txt

FROM debian:bookworm-slim
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates \
      $(cat /tmp/runtime-packages.txt) \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 postern \
 && useradd --system --uid 10001 --gid postern --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postern \
 && mkdir -p /etc/postern/config /etc/postern/certs /etc/postern/tls /etc/postern/ca /etc/postern/policy /etc/postern/keys
COPY --from=build /out/postern-edge /out/postern-broker /out/postern-connector /out/postern-policy /out/postern-demo \
     /usr/local/bin/
USER 10001:10001
# edge 8080 (admin 9100), broker registration 7443 / relay 7080 (admin 9101),
# connector admin 9102, policy 7090 (admin 9103).
EXPOSE 8080 7443 7080 7090 9100 9101 9102 9103
CMD ["postern-edge", "--help"]
