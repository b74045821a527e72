#!/usr/bin/env bash
# Fetch the Apache Kafka broker jars (.ci/kafka/pom.xml) from Maven Central into a cache, once.
# Prints the cache directory. A finished cache holds lib/*.jar and a COMPLETE marker; a partial
# one (interrupted download) is never used and is fetched again.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$(sha256sum "$here/pom.xml" | cut -c1-12)"
cache="${DEPLOYCTL_KAFKA_CACHE:-${DEPLOYCTL_CACHE:-$HOME/.cache/deployctl}/kafka}/$key"
if [ -f "$cache/COMPLETE" ]; then echo "$cache"; exit 0; fi
command -v java >/dev/null || { echo "kafka: java (>= 17) is needed to run the test broker" >&2; exit 1; }
command -v mvn >/dev/null || { echo "kafka: mvn is needed to fetch the broker jars (apt-get install maven)" >&2; exit 1; }
mkdir -p "$(dirname "$cache")"
work="$(mktemp -d "$(dirname "$cache")/.fetch-XXXXXX")"
trap 'rm -rf "$work"' EXIT
for try in 1 2 3; do
  if mvn -B -q -f "$here/pom.xml" \
      -Dmaven.repo.local="$(dirname "$cache")/m2" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$work/lib" >"$work/mvn.log" 2>&1; then
    break
  fi
  if [ "$try" -eq 3 ]; then
    echo "kafka: fetching the broker jars failed 3 times; last log:" >&2; tail -n 30 "$work/mvn.log" >&2; exit 1
  fi
  echo "kafka: fetch attempt $try failed; retrying in $((try * 5)) s" >&2; sleep $((try * 5))
done
ls "$work/lib"/kafka_2.13-*.jar >/dev/null
touch "$work/COMPLETE"
rm -f "$work/mvn.log"
# another fetch may have finished first: keep a complete cache, replace only a partial one
if ! mv -T "$work" "$cache" 2>/dev/null; then
  if [ ! -f "$cache/COMPLETE" ]; then rm -rf "$cache" && mv -T "$work" "$cache"; fi
fi
echo "$cache"
