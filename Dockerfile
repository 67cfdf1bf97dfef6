# Builds the `souk` binary; the image runs workers (`souk run`) by default.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked && cp target/release/souk /usr/local/bin/souk

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/souk /usr/local/bin/souk
COPY config /app/config
WORKDIR /app
EXPOSE 9187
STOPSIGNAL SIGTERM
CMD ["souk", "run"]
