"""How fast policy judges specs (lint) and a host full of containers (audit).

1. lint throughput, in-process, over N generated spec documents of varied shape (limits,
   capabilities, host mounts, exceptions): policy evaluation alone (documents already loaded),
   and end to end (YAML text -> loaded, validated document -> findings, what `agentcell lint`
   does per document);
2. audit time with 100 running containers the bench creates (agentcell/base:bookworm,
   `sleep 600`, network none, label org.agentcell.bench=1): reading every container from the
   engine with 1, 4 and 8 inspections in flight and with docker-py's ``containers.list``
   (which inspects one by one), translating them and judging them. The containers are
   removed at the end, also on failure or Ctrl-C.

Prints a table and writes bench/results/policy.json.
Usage: python bench/policy.py [--specs 20000] [--containers 100] [--rounds 5] [--no-audit]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors

from agentcell.policy.admission import apply_exceptions
from agentcell.policy.audit import audit
from agentcell.policy.presets import RulePolicy, preset
from agentcell.runtime.docker.client import connect
from agentcell.runtime.docker.facts import observe_host, view_of_container
from agentcell.spec.load import SpecDocument, load_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "policy.json"
BENCH_LABEL = "org.agentcell.bench"
BASE_IMAGE = "agentcell/base:bookworm"


def spec_text(index: int) -> str:
    """One of several spec shapes, so the rules see clean, hostile and excepted cells."""
    shape = index % 4
    lines = [
        "apiVersion: agentcell/v1",
        "kind: Agent",
        f"metadata:\n  name: agent-{index}\n  tenant: t{index % 7}",
        "spec:",
        "  image: " + ("agentcell/sandbox:0.1.0" if shape else "x@sha256:" + "a" * 64),
        "  resources:\n    cpus: 0.25\n    memory: 128m\n    pids: 64",
        "    tmpfs:\n      - {path: /tmp, size: 16m}",
    ]
    if shape == 1:
        lines.append("  security:\n    capabilities: [NET_BIND_SERVICE, SYS_PTRACE]\n    user: 0")
    if shape == 2:
        lines.append(
            "  host:\n    pid: true\n    docker_socket: true\n    mounts:\n"
            "      - {source: /proc, target: /host/proc}\n"
            "      - {source: /var/log, target: /host/log}"
        )
        lines.append("  exceptions:\n    - {rule: AC-025, reason: reads host process table}")
    if shape == 3:
        lines.append("  healthcheck:\n    command: [python3, /opt/agentcell/health.py]")
        lines.append("  restart: {policy: always}")
    return "\n".join(lines) + "\n"


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds else float("inf")


def best_of(rounds: int, action: Callable[[], object]) -> tuple[float, list[float]]:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return min(samples), samples


def bench_lint(specs: int, rounds: int) -> dict[str, Any]:
    texts = [spec_text(i) for i in range(specs)]
    docs: list[SpecDocument] = [doc for text in texts for doc in load_text(text)]
    policy = preset("restricted")

    def evaluate_only() -> int:
        return sum(len(apply_exceptions(doc, policy.evaluate(doc))) for doc in docs)

    # YAML parsing dominates end to end; a tenth of the documents gives a stable rate.
    e2e_texts = texts[: max(1, specs // 10)]

    def end_to_end() -> int:
        found = 0
        for text in e2e_texts:
            for doc in load_text(text):
                found += len(apply_exceptions(doc, policy.evaluate(doc)))
        return found

    findings = evaluate_only()
    evaluate_s, evaluate_samples = best_of(rounds, evaluate_only)
    e2e_s, e2e_samples = best_of(max(1, rounds // 2), end_to_end)
    return {
        "documents": specs,
        "findings_per_pass": findings,
        "evaluate_specs_per_s": rate(specs, evaluate_s),
        "evaluate_median_s": statistics.median(evaluate_samples),
        "end_to_end_documents": len(e2e_texts),
        "end_to_end_specs_per_s": rate(len(e2e_texts), e2e_s),
        "end_to_end_median_s": statistics.median(e2e_samples),
        "goal_specs_per_s": 10_000,
    }


@contextlib.contextmanager
def bench_containers(client: docker.DockerClient, count: int) -> Iterator[list[str]]:
    """``count`` running containers, removed on the way out whatever happens."""
    remove_bench_containers(client)  # leftovers of an interrupted run
    names: list[str] = []
    try:

        def start(index: int) -> str:
            name = f"acbench-policy-{index:03d}"
            names.append(name)
            client.containers.run(
                BASE_IMAGE,
                ["sleep", "600"],
                name=name,
                detach=True,
                network_mode="none",
                labels={BENCH_LABEL: "1"},
                mem_limit="32m",
                pids_limit=16,
            )
            return name

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(start, range(count)))
        yield names
    finally:
        remove_bench_containers(client)


def remove_bench_containers(client: docker.DockerClient) -> None:
    containers = client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}=1"})

    def remove(container: Any) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(remove, containers))


def read_and_judge(client: docker.DockerClient, policy: RulePolicy, workers: int) -> int:
    return len(audit(observe_host(client, workers=workers), policy).containers)


def bench_audit(count: int, rounds: int) -> dict[str, Any]:
    client = connect()
    policy = preset("restricted")
    try:
        setup_start = time.perf_counter()
        with bench_containers(client, count):
            setup_s = time.perf_counter() - setup_start
            total = len(client.api.containers(all=True))
            results: dict[str, Any] = {"containers_created": count, "containers_on_host": total}
            results["create_and_start_s"] = setup_s

            def sdk_list() -> int:
                observed = [view_of_container(c.attrs) for c in client.containers.list(all=True)]
                return len(audit(observed, policy).containers)

            strategies: dict[str, Callable[[], int]] = {
                "docker-py containers.list (sequential inspect)": sdk_list,
            }
            for workers in (1, 4, 8):
                strategies[f"observe_host workers={workers}"] = functools.partial(
                    read_and_judge, client, policy, workers
                )
            timings = {}
            for label, action in strategies.items():
                best, samples = best_of(rounds, action)
                timings[label] = {"best_s": best, "median_s": statistics.median(samples)}
            observed = observe_host(client)
            judge_s, _ = best_of(rounds, lambda: audit(observed, policy))
            results["read_and_judge"] = timings
            results["judge_only_s"] = judge_s
            results["containers_judged"] = len(observed)
    finally:
        client.close()
    return results


def print_table(results: dict[str, Any]) -> None:
    lint = results["lint"]
    rows = [
        ("lint: policy evaluation", f"{lint['evaluate_specs_per_s']:,.0f} specs/s",
         f"{lint['documents']} documents, goal >= {lint['goal_specs_per_s']:,}"),
        ("lint: YAML + validation + policy", f"{lint['end_to_end_specs_per_s']:,.0f} specs/s",
         f"{lint['end_to_end_documents']} documents"),
    ]  # fmt: skip
    audit_results = results.get("audit")
    if audit_results:
        n = audit_results["containers_judged"]
        for label, timing in audit_results["read_and_judge"].items():
            rows.append(
                (f"audit: {label}", f"{timing['best_s'] * 1000:,.0f} ms", f"{n} containers")
            )
        rows.append(
            (
                "audit: judging only",
                f"{audit_results['judge_only_s'] * 1000:,.1f} ms",
                f"{n} containers",
            )
        )
    width = max(len(row[0]) for row in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>16}  {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--specs", type=int, default=20_000)
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-audit", action="store_true", help="Skip the Docker part.")
    options = parser.parse_args()

    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "lint": bench_lint(options.specs, options.rounds),
    }
    if not options.no_audit:
        results["audit"] = bench_audit(options.containers, options.rounds)
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
