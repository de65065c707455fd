# nginx in front of the service replicas (docker-compose.yml's `lb`).
#
# BASE_IMAGE is any image with nginx (the default, the official nginx image), or a plain
# Debian/Ubuntu or Alpine image, where nginx is installed from the distribution.
ARG BASE_IMAGE=nginx:1.27-alpine
FROM ${BASE_IMAGE}

RUN set -eux; \
    want_nginx=0; want_wget=0; \
    command -v nginx >/dev/null 2>&1 || want_nginx=1; \
    command -v wget >/dev/null 2>&1 || command -v curl >/dev/null 2>&1 || want_wget=1; \
    if command -v apt-get >/dev/null 2>&1 && [ "$want_nginx$want_wget" != 00 ]; then \
        apt-get update; \
        pkgs=""; \
        # nginx-light (Debian 12) leaves out the modules that pull in image and XML libraries.
        if [ "$want_nginx" = 1 ]; then \
            if apt-cache show nginx-light >/dev/null 2>&1; then pkgs="nginx-light"; else pkgs="nginx"; fi; \
        fi; \
        if [ "$want_wget" = 1 ]; then pkgs="$pkgs wget"; fi; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
        apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    elif command -v apk >/dev/null 2>&1 && [ "$want_nginx" = 1 ]; then \
        apk add --no-cache nginx; \
    fi; \
    nginx -v

COPY docker/nginx.conf /etc/convscope/nginx.conf.template
COPY docker/lb-entrypoint.sh /usr/local/bin/convscope-lb
RUN chmod 0755 /usr/local/bin/convscope-lb

EXPOSE 8080
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD wget -q -O /dev/null http://127.0.0.1:8080/lb-healthz || curl -fsS -o /dev/null http://127.0.0.1:8080/lb-healthz || exit 1
ENTRYPOINT ["/bin/sh", "/usr/local/bin/convscope-lb"]
