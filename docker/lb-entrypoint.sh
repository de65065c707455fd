#!/bin/sh
# Entry point of the load balancer image: render docker/nginx.conf and run nginx.
#   CONVSCOPE_LB_UPSTREAM  host:port of the replicas' service name (default service:8000)
#   CONVSCOPE_LB_MAX_BODY_SIZE  nginx's client_max_body_size (default 9m: the service's 8 MiB
#                          CONVSCOPE_MAX_BODY_BYTES and some room)
#   CONVSCOPE_LB_RESOLVER  DNS server(s) for nginx (default: the first nameserver in
#                          /etc/resolv.conf, i.e. the container engine's DNS)
set -eu

upstream="${CONVSCOPE_LB_UPSTREAM:-service:8000}"
max_body="${CONVSCOPE_LB_MAX_BODY_SIZE:-9m}"
case "$max_body" in
    *[!0-9kKmMgG]* | "") echo "convscope-lb: CONVSCOPE_LB_MAX_BODY_SIZE=$max_body is not a size (e.g. 9m)" >&2; exit 2 ;;
esac
resolvers="${CONVSCOPE_LB_RESOLVER:-}"
if [ -z "$resolvers" ]; then
    # The first nameserver is the container engine's DNS, the one that knows the service
    # names; podman lists the host's servers after it, which would answer NXDOMAIN for
    # them. IPv6 needs brackets; link-local (with a %zone) cannot be used by nginx.
    resolvers=$(awk '$1 == "nameserver" && $2 !~ /%/ {
                         a = $2; if (a ~ /:/) a = "[" a "]"; print a; exit }' \
                    /etc/resolv.conf 2>/dev/null || true)
fi
if [ -z "$resolvers" ]; then
    resolvers=127.0.0.11   # Docker's embedded DNS
fi

conf=/tmp/convscope-nginx.conf
sed -e "s|__RESOLVERS__|$resolvers|" -e "s|__UPSTREAM__|$upstream|" -e "s|__MAX_BODY__|$max_body|g" \
    /etc/convscope/nginx.conf.template > "$conf"
echo "convscope-lb: upstream http://$upstream, resolver $resolvers, bodies up to $max_body" >&2
nginx -t -q -c "$conf"
exec nginx -c "$conf" -g 'daemon off;'
