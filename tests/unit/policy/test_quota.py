"""Quota admission: the numbers in the refusal, every limit at once, the batch summed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentcell.errors import AdmissionError
from agentcell.policy import AdmittedSpec, admit
from agentcell.policy.quota import QuotaUse, check_quota, quota_below_use, use_of_specs
from agentcell.spec.load import load_text
from agentcell.spec.tenant import TenantQuota
from tests.policies import AdmitAll

GiB = 2**30
MiB = 2**20


def cell(name: str, *, cpus: float = 0.5, memory: str = "256m", pids: int = 128) -> AdmittedSpec:
    (doc,) = load_text(
        f"apiVersion: agentcell/v1\nkind: Agent\nmetadata: {{name: {name}, tenant: acme}}\n"
        f"spec:\n  image: x\n  resources: {{cpus: {cpus}, memory: {memory}, pids: {pids}}}\n",
        file="cells.yaml",
    )
    return admit(doc, AdmitAll())


def test_the_refusal_names_the_numbers() -> None:
    in_use = QuotaUse(cpus=1, memory=1536 * MiB, pids=100, cells=2)
    with pytest.raises(AdmissionError) as refused:
        check_quota("acme", TenantQuota(memory=2 * GiB), in_use, [cell("a", memory="768m")])
    assert "tenant acme: memory 1536m in use + 768m asked > 2g quota" in refused.value.what
    assert refused.value.where is not None and refused.value.where.file == "cells.yaml"


def test_every_exceeded_limit_is_listed() -> None:
    quota = TenantQuota(cpus=1, memory=GiB, pids=200, cells=1)
    with pytest.raises(AdmissionError) as refused:
        check_quota("acme", quota, QuotaUse(), [cell("a", cpus=1), cell("b", cpus=1)])
    text = refused.value.what
    for limit in ("cpus 0 in use + 2 asked > 1 quota", "pids 0 in use + 256 asked > 200 quota",
                  "cells 0 in use + 2 asked > 1 quota"):  # fmt: skip
        assert limit in text
    assert "memory" not in text  # 512m fits in 1g


def test_a_batch_that_fits_passes_and_unset_limits_are_not_enforced() -> None:
    check_quota("acme", TenantQuota(cells=3), QuotaUse(cells=1), [cell("a"), cell("b")])
    check_quota("acme", TenantQuota(), QuotaUse(cpus=100, cells=100), [cell("a", cpus=64)])


def test_a_quota_below_what_runs_is_reported() -> None:
    in_use = QuotaUse(cpus=2, memory=3 * GiB, pids=10, cells=4)
    assert quota_below_use(TenantQuota(memory=2 * GiB, cells=4), in_use) == [
        "memory 3g in use + 0 asked > 2g quota"
    ]


@given(
    st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=2048),
)
def test_pids_quota_admits_exactly_the_batches_that_fit(pids: list[int], quota: int) -> None:
    batch = [cell(f"c{i}", pids=p) for i, p in enumerate(pids)]
    assert use_of_specs(batch).pids == sum(pids)
    fits = sum(pids) <= quota
    try:
        check_quota("acme", TenantQuota(pids=quota), QuotaUse(), batch)
    except AdmissionError:
        assert not fits
    else:
        assert fits
