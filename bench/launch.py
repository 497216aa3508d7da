"""How much agentcell adds to launching a cell, against the raw engine in the same run.

Two comparisons, alternating A and B so drift on a shared machine hits both alike:

1. in-process: ``DockerBackend.up(admitted)`` (spec already loaded and admitted) against the
   docker SDK's ``containers.run`` with exactly the same settings;
2. end to end: the ``agentcell up -f SPEC`` command against ``docker run -d`` with the same flags
   (the command ``agentcell render`` prints).

Each launched container is removed before the next run; removal is not timed.
Usage: python bench/launch.py [--runs 20] [--spec examples/sandbox.yaml]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from agentcell.policy import admit, preset
from agentcell.runtime.docker.backend import DockerBackend
from agentcell.runtime.docker.translate import settings_for
from agentcell.spec.load import load_paths
from stats import summary, timed_ms

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "launch.json"
AGENTCELL = Path(sys.executable).with_name("agentcell")


def remove(client: docker.DockerClient, name: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.containers.get(name).remove(force=True)


def timed(action: Callable[[], object], cleanup: Callable[[], None]) -> float:
    elapsed = timed_ms(action)
    cleanup()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--spec", type=Path, default=REPO / "examples" / "sandbox.yaml")
    options = parser.parse_args()

    backend = DockerBackend.connect()
    client = backend.client
    with tempfile.TemporaryDirectory() as tmp:
        # A tenant of its own, so the bench never touches a demo cell.
        text = options.spec.read_text().replace("tenant: demo", "tenant: bench")
        spec_file = Path(tmp) / "bench.yaml"
        spec_file.write_text(text)
        (doc,) = load_paths([spec_file])
        admitted = admit(doc, preset(os.environ.get("AGENTCELL_BENCH_POLICY", "restricted")))
        settings = settings_for(admitted)
        name = settings.name
        raw_kwargs = settings.sdk_kwargs()
        argv = settings.docker_run_argv()
        argv[0] = shutil.which("docker") or "docker"
        remove(client, name)
        _ = backend.facts  # read once, as a long-lived process would have

        samples: dict[str, list[float]] = {k: [] for k in ("agentcell", "sdk", "cli", "docker")}
        try:
            for _ in range(options.runs):
                samples["agentcell"].append(
                    timed(lambda: backend.up(admitted), lambda: remove(client, name))
                )
                samples["sdk"].append(
                    timed(lambda: client.containers.run(**raw_kwargs), lambda: remove(client, name))
                )
                samples["cli"].append(
                    timed(
                        lambda: subprocess.run(
                            [str(AGENTCELL), "up", "-f", str(spec_file)],
                            check=True,
                            capture_output=True,
                        ),
                        lambda: remove(client, name),
                    )
                )
                samples["docker"].append(
                    timed(
                        lambda: subprocess.run(argv, check=True, capture_output=True),
                        lambda: remove(client, name),
                    )
                )
        finally:
            remove(client, name)
            # The engine leaves the tenant's cgroup parent behind when a cell is removed by hand.
            backend.tenant_cgroup("bench").remove()
            backend.close()

    rows = {key: summary(values) for key, values in samples.items()}
    ratios = {
        "in_process": rows["agentcell"]["median_ms"] / rows["sdk"]["median_ms"],
        "end_to_end": rows["cli"]["median_ms"] / rows["docker"]["median_ms"],
    }
    print(f"{'what':44} {'median ms':>10} {'p10':>8} {'p90':>8}")
    labels = {
        "agentcell": "DockerBackend.up (in-process)",
        "sdk": "docker SDK containers.run (same settings)",
        "cli": "agentcell up -f SPEC (command)",
        "docker": "docker run -d (same flags)",
    }
    for key, label in labels.items():
        row = rows[key]
        print(f"{label:44} {row['median_ms']:10.1f} {row['p10_ms']:8.1f} {row['p90_ms']:8.1f}")
    print(f"ratio in-process  (target <= 1.10): {ratios['in_process']:.3f}")
    print(f"ratio end to end  (target <= 1.50): {ratios['end_to_end']:.3f}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "spec": str(options.spec),
                "runs": options.runs,
                "docker_run": shlex.join(argv),
                "results": rows,
                "ratios": ratios,
                "raw_ms": samples,
            },
            indent=2,
        )
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
