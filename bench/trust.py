"""What image trust adds to a launch: digest resolution plus cosign signature verification.

Against the real registry on 127.0.0.1:5000, with a signed test image pushed for the run:

1. raw baseline: one ``GET /v2/`` on a warm ``requests`` session (one loopback round trip);
2. resolve only: tag -> digest (``HEAD`` manifest) through agentcell's registry client;
3. pin_and_verify, warm: what admission adds per cell in a long-lived process (resolve, fetch
   the signature manifest and payload, check the ECDSA signature) on a kept-open connection;
4. pin_and_verify, cold: the same with a new connection each time (what one CLI call pays).

Rows alternate so drift on a shared machine hits each alike. The goal is a warm median of at
most 20 ms. The image's local tags are removed at the end; the pushed blobs stay in the registry
under a repository named for this run.
Usage: python bench/trust.py [--runs 200]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import requests

from agentcell.policy import admit, preset
from agentcell.runtime.docker.registry import push
from agentcell.spec.load import load_text
from agentcell.trust.admission import pin_and_verify
from agentcell.trust.config import parse_trust_config
from agentcell.trust.keys import generate_key_pair
from agentcell.trust.reference import ImageReference
from agentcell.trust.registry import Registries, RegistryClient
from agentcell.trust.signing import sign_image
from stats import summary, timed_ms

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "trust.json"
REGISTRY = "127.0.0.1:5000"
GOAL_MS = 20.0


def build_test_image(client: docker.DockerClient, marker: str) -> str:
    tag = f"agentcell-bench/trust:{marker}"
    dockerfile = f"FROM agentcell/base:bookworm\nLABEL org.agentcell.bench={marker}\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    options = parser.parse_args()

    client = docker.from_env(version="1.41")
    marker = uuid.uuid4().hex[:12]
    local = build_test_image(client, marker)
    target = f"{REGISTRY}/agentcell-bench/trust-{marker}:v1"
    key = generate_key_pair(name="bench")
    pem = "".join(f"      {line}\n" for line in key.public.pem().decode().splitlines())
    config = parse_trust_config(
        "apiVersion: agentcell/v1\nkind: TrustConfig\nrequire_signatures: true\n"
        f"keys:\n  - name: bench\n    pem: |\n{pem}"
    )
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata:\n  name: bench\n  tenant: bench\n"
        f"spec:\n  image: {target}\n"
    )
    admitted = admit(doc, preset("restricted"))
    try:
        push(client, local, target)
        reference = ImageReference.parse(target)
        signer = RegistryClient(REGISTRY)
        sign_image(signer, reference, key)
        signer.close()

        raw = requests.Session()
        raw.trust_env = False
        registries = Registries()
        resolver = registries.client(REGISTRY)
        # Warm every connection once, as a long-lived process would have.
        raw.get(f"http://{REGISTRY}/v2/", timeout=5)
        pin_and_verify(admitted, config, registries=registries)

        def cold() -> None:
            with Registries() as fresh:
                pin_and_verify(admitted, config, registries=fresh)

        actions: dict[str, Callable[[], object]] = {
            "raw": lambda: raw.get(f"http://{REGISTRY}/v2/", timeout=5),
            "resolve": lambda: resolver.resolve(reference),
            "warm": lambda: pin_and_verify(admitted, config, registries=registries),
            "cold": cold,
        }
        samples: dict[str, list[float]] = {name: [] for name in actions}
        for _ in range(options.runs):
            for name, action in actions.items():
                samples[name].append(timed_ms(action))
        registries.close()
        raw.close()
    finally:
        for tag in (target, local):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag, force=True)

    rows = {name: summary(values) for name, values in samples.items()}
    labels = {
        "raw": "raw GET /v2/ (warm session, baseline)",
        "resolve": "resolve tag -> digest (HEAD manifest)",
        "warm": "pin_and_verify, warm connection",
        "cold": "pin_and_verify, new connection",
    }
    print(f"{'what':44} {'median ms':>10} {'p10':>8} {'p90':>8}")
    for name, label in labels.items():
        row = rows[name]
        print(f"{label:44} {row['median_ms']:10.2f} {row['p10_ms']:8.2f} {row['p90_ms']:8.2f}")
    warm = rows["warm"]["median_ms"]
    verdict = "met" if warm <= GOAL_MS else "missed"
    print(f"goal: warm median <= {GOAL_MS:.0f} ms: {verdict} ({warm:.2f} ms)")
    print(f"warm pin_and_verify = {warm / rows['raw']['median_ms']:.1f} raw round trips")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "registry": REGISTRY,
                "runs": options.runs,
                "goal_warm_median_ms": GOAL_MS,
                "goal_met": warm <= GOAL_MS,
                "results": rows,
                "raw_ms": samples,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
