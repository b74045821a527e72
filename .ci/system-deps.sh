#!/usr/bin/env bash
# Debian packages the tests need: PostgreSQL (audit store), the CNCF distribution registry
# (image checks), skopeo, Prometheus (timeline overlays) and Java/Maven (the Kafka test broker). Installed only when missing; needs root (CI runs as root).
set -euo pipefail
need=()
[ -x /usr/lib/postgresql/*/bin/postgres ] 2>/dev/null || need+=(postgresql)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v chromium >/dev/null || need+=(chromium)   # PNG audit timelines; the dashboard browser tests (Playwright drives it)
command -v promtool >/dev/null || need+=(prometheus) # timeline overlays from a real Prometheus
command -v mvn >/dev/null || need+=(maven)           # fetches the Kafka broker jars (make kafka)
command -v java >/dev/null || need+=(default-jre-headless)  # runs the Kafka test broker
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
