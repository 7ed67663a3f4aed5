# Multi-stage build: compile in the Rust image, run in a slim Debian as a non-root user.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml names these targets; they are not built into the image.
COPY benches ./benches
COPY bench ./bench
RUN cargo build --release --locked --bin leasegate

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin leasegate \
    && mkdir -p /etc/leasegate
COPY --from=build /src/target/release/leasegate /usr/local/bin/leasegate
COPY config.example.yaml /etc/leasegate/leasegate.yaml
USER leasegate
EXPOSE 6380 9180
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/leasegate"]
CMD ["run", "--config", "/etc/leasegate/leasegate.yaml"]
