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
# Liveness from the admin API's GET /healthz (admin.listen, 127.0.0.1:9180 by
# default; 0.0.0.0:9180 answers there too). The image has no curl: bash's
# /dev/tcp sends an HTTP/1.0 request and the status line must say 200.
# A config that moves admin.listen elsewhere or disables it ("") needs
# --no-healthcheck or its own HEALTHCHECK.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9180 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/leasegate"]
CMD ["run", "--config", "/etc/leasegate/leasegate.yaml"]
