"""Image references: which part is a registry, a tag, a digest, and what is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.errors import TrustError
from agentcell.trust.reference import ImageReference, is_loopback_host, parse_digest

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("agentcell/monitor-agent:0.1.0", None, "agentcell/monitor-agent", "0.1.0", None),
        ("busybox", None, "busybox", None, None),
        ("127.0.0.1:5000/a/b:v1", "127.0.0.1:5000", "a/b", "v1", None),
        ("localhost/a", "localhost", "a", None, None),
        ("registry.example/a/b", "registry.example", "a/b", None, None),
        (f"127.0.0.1:5000/a@{DIGEST}", "127.0.0.1:5000", "a", None, DIGEST),
        (f"127.0.0.1:5000/a:v2@{DIGEST}", "127.0.0.1:5000", "a", "v2", DIGEST),
        ("[::1]:5000/a:v1", "[::1]:5000", "a", "v1", None),
    ],
)
def test_parts_are_read_as_the_engine_reads_them(
    text: str, registry: str | None, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = ImageReference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )
    assert str(ref) == text
    assert ref.is_local == (registry is None)


def test_cells_run_by_registry_name_and_digest() -> None:
    ref = ImageReference.parse("127.0.0.1:5000/agentcell/x:1")
    assert ref.by_digest(parse_digest(DIGEST)) == f"127.0.0.1:5000/agentcell/x@{DIGEST}"
    assert ImageReference.parse("127.0.0.1:5000/x").effective_tag == "latest"


@pytest.mark.parametrize(
    "text",
    ["", "UPPER/case", "a/b:", "a/b@sha256:abc", "a//b", "a/b:ta g", "a/b@md5:" + "0" * 32],
)
def test_malformed_references_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(TrustError) as caught:
        ImageReference.parse(text)
    assert caught.value.reason == "bad-reference"
    assert caught.value.fix


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.8.9.10", True),
        ("localhost:5000", True),
        ("[::1]:5000", True),
        ("10.0.0.1:5000", False),
        ("registry.example:443", False),
        ("169.254.169.254", False),
    ],
)
def test_only_loopback_registries_are_spoken_to_in_plain_http(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


_component = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,8}){0,2}", fullmatch=True)


@given(
    registry=st.sampled_from([None, "127.0.0.1:5000", "localhost:5000", "reg.example"]),
    parts=st.lists(_component, min_size=1, max_size=3),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    digest=st.one_of(st.none(), st.from_regex(r"sha256:[a-f0-9]{64}", fullmatch=True)),
)
def test_every_valid_reference_round_trips(
    registry: str | None, parts: list[str], tag: str | None, digest: str | None
) -> None:
    if registry is None and len(parts) > 1:
        # A dotted first component would be a registry host, as the reference grammar says.
        parts[0] = parts[0].replace(".", "_")
    text = "/".join(parts)
    if registry:
        text = f"{registry}/{text}"
    if tag:
        text += f":{tag}"
    if digest:
        text += f"@{digest}"
    ref = ImageReference.parse(text)
    assert str(ref) == text
    assert ref.registry == registry
    assert ref.repository == "/".join(parts)
