# The load balancer: HAProxy from Debian's package, with deploy/haproxy.cfg.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy socat \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /run/haproxy
COPY deploy/haproxy.cfg /etc/haproxy/haproxy.cfg
EXPOSE 8000
CMD ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
