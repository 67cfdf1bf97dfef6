# Builds the `souk` binary; the image runs workers (`souk run`) by default, as an unprivileged
# user, with `souk health` (the ops port's /healthz) as its healthcheck.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/souk /usr/local/bin/souk

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin souk
COPY --from=build /usr/local/bin/souk /usr/local/bin/souk
COPY config /app/config
WORKDIR /app
USER 10001:10001
# The ops port must listen beyond loopback for other containers (and the healthcheck asks it).
ENV SOUK_OPS__LISTEN=0.0.0.0:9187
EXPOSE 9187
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["souk", "health"]
STOPSIGNAL SIGTERM
CMD ["souk", "run"]
