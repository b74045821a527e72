"""Benchmark: resolve 1,000 distinct tags against a local registry; print wall time and requests made.

    .venv/bin/python bench/registry.py [--tags 1000] [--concurrency 16] [--auth none|basic|token]

Starts Debian's docker-registry on a free loopback port in a tmp dir, pushes ``--tags`` tags of one
small image through the HTTP API (blobs pushed once; each manifest differs by an annotation, so every
tag has its own digest), then resolves them all with one fresh ``RegistryClient``.
Target: <= 2 s and exactly one manifest request per distinct reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployctl.edges.registry.client import Credential, CredentialStore, RegistryClient  # noqa: E402
from deployctl.log import configure_logging  # noqa: E402
from tests.fixtures.registry import LocalRegistry, RegistryPusher, registry_binary, start_registry  # noqa: E402

REPOSITORY = "shop/web"
TARGET_SECONDS = 2.0


def push_tags(registry: LocalRegistry, count: int, workers: int = 8) -> dict[str, str]:
    """Push ``count`` tags (``<40-hex>``-like names) and return tag -> manifest digest."""
    RegistryPusher(registry).push_image(REPOSITORY, "base")  # the shared blobs, once
    tags = [f"{i:040x}" for i in range(count)]

    def push_slice(part: list[str]) -> dict[str, str]:
        pusher = RegistryPusher(registry)
        try:
            return {tag: pusher.push_image(REPOSITORY, tag, annotation=tag).digest for tag in part}
        finally:
            pusher.close()

    digests: dict[str, str] = {}
    with ThreadPoolExecutor(workers) as pool:
        for part in pool.map(push_slice, [tags[i::workers] for i in range(workers)]):
            digests.update(part)
    return digests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth", choices=["none", "basic", "token"], default="none")
    args = parser.parse_args()
    configure_logging("warning")
    if registry_binary() is None:
        print("skipped, docker-registry is not installed (apt-get install docker-registry)")
        return 0

    with tempfile.TemporaryDirectory(prefix="deployctl-bench-registry-") as tmp:
        registry = start_registry(Path(tmp), auth=args.auth)
        try:
            started = time.perf_counter()
            digests = push_tags(registry, args.tags)
            push_seconds = time.perf_counter() - started

            login = Credential(registry.username, registry.password)
            credentials = CredentialStore(static={registry.host: login})
            references = [f"{registry.host}/{REPOSITORY}:{tag}" for tag in digests]
            client = RegistryClient(credentials=credentials, concurrency=args.concurrency)
            started = time.perf_counter()
            results = client.resolve_many(references)
            seconds = time.perf_counter() - started
            requests = client.requests_made
            client.close()
        finally:
            registry.stop()

    wrong = [r for r in references if results[r].digest != digests[r.rsplit(":", 1)[1]]]
    manifest_requests = requests["HEAD manifest"] + requests["GET manifest"]
    one_per_reference = manifest_requests == len(references)
    print(f"registry: docker-registry on {registry.host}, auth={args.auth}, concurrency={args.concurrency}")
    print(f"pushed {len(digests)} tags in {push_seconds:.2f} s (setup, not measured)")
    print(f"resolved {len(references)} distinct tags in {seconds:.3f} s ({len(references) / seconds:.0f}/s)")
    print("requests made: " + ", ".join(f"{k}={v}" for k, v in sorted(requests.items())))
    print(f"manifest requests per distinct reference: {manifest_requests / len(references):.2f}")
    print(f"wrong or unresolved digests: {len(wrong)}")
    verdict = "met" if seconds <= TARGET_SECONDS and one_per_reference and not wrong else "MISSED"
    print(f"target (<= {TARGET_SECONDS:.0f} s, exactly one manifest request per reference): {verdict}")
    return 0 if not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
