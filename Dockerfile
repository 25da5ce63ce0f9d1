# The mdm service image (used by docker-compose.yml). Not built on our own
# machines, which have no Docker engine.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mdm-api

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/mdm /usr/local/bin/mdm
WORKDIR /var/lib/mdm
EXPOSE 8080
ENV MDM_HTTP_LISTEN=0.0.0.0:8080
ENTRYPOINT ["mdm"]
CMD ["serve"]
