from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.spec.units import format_bytes, parse_bytes, parse_duration_ns


@pytest.mark.parametrize(
    ("text", "expected"),
    [("256m", 256 * 2**20), ("64MiB", 64 * 2**20), ("1g", 2**30), ("512", 512), ("1.5k", 1536)],
)
def test_sizes_use_binary_units_like_docker(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "m", "12 parsecs", "-5m", "1e9"])
def test_nonsense_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_bytes(text)


@given(st.integers(min_value=0, max_value=2**50))
def test_format_then_parse_is_exact(size: int) -> None:
    assert parse_bytes(format_bytes(size)) == size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", 30 * 10**9), ("500ms", 5 * 10**8), ("2m", 120 * 10**9), (3, 3 * 10**9)],
)
def test_durations(text: str | int, expected: int) -> None:
    assert parse_duration_ns(text) == expected
