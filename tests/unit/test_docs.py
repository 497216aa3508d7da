"""The README's examples are real: every spec block passes the default policy, and the trust
config block loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agentcell.policy import admit, preset
from agentcell.spec.load import load_text
from agentcell.trust.config import parse_trust_config
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```yaml\n(.*?)```", README, flags=re.DOTALL)
SPECS = [block for block in BLOCKS if "kind: Agent" in block]
TRUST = [block for block in BLOCKS if "kind: TrustConfig" in block]


def test_the_readme_has_examples() -> None:
    assert SPECS and TRUST


@pytest.mark.parametrize("block", SPECS, ids=lambda block: block.split("name: ")[1].split()[0])
def test_every_spec_in_the_readme_is_admitted_by_the_default_policy(block: str) -> None:
    for doc in load_text(block, file="README.md"):
        assert admit(doc, preset("restricted"))


@pytest.mark.parametrize("block", TRUST)
def test_the_trust_config_in_the_readme_loads(block: str, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "platform.pub").write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = parse_trust_config(block, file=str(tmp_path / "trust.yaml"))
    assert config.for_tenant("acme").require_signatures
    assert not config.for_tenant("other").require_signatures
