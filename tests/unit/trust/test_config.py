"""The trust config: keys, per-tenant settings, and errors that name file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentcell.errors import SpecError
from agentcell.trust.config import load_trust_config, parse_trust_config
from agentcell.trust.keys import generate_key_pair


def _indented(pem: bytes, spaces: int) -> str:
    return textwrap.indent(pem.decode(), " " * spaces)


def test_global_keys_and_tenant_keys_combine(tmp_path: Path) -> None:
    platform, acme = generate_key_pair(), generate_key_pair()
    (tmp_path / "platform.pub").write_bytes(platform.public.pem())
    config_file = tmp_path / "trust.yaml"
    config_file.write_text(
        "apiVersion: agentcell/v1\n"
        "kind: TrustConfig\n"
        "keys:\n"
        "  - name: platform\n"
        "    path: platform.pub\n"
        "tenants:\n"
        "  acme:\n"
        "    require_signatures: true\n"
        "    keys:\n"
        "      - name: acme-ci\n"
        "        pem: |\n" + _indented(acme.public.pem(), 10)
    )
    config = load_trust_config(config_file)
    assert config.source == str(config_file)
    default = config.for_tenant("other")
    assert [key.name for key in default.keys] == ["platform"]
    assert not default.require_signatures
    tenant = config.for_tenant("acme")
    assert [key.fingerprint for key in tenant.keys] == [
        platform.public.fingerprint,
        acme.public.fingerprint,
    ]
    assert tenant.require_signatures


def test_a_tenant_cannot_loosen_the_host() -> None:
    config = parse_trust_config(
        "apiVersion: agentcell/v1\nkind: TrustConfig\nrequire_signatures: true\n"
        "require_digest: true\ntenants:\n  lax:\n    require_signatures: false\n"
    )
    lax = config.for_tenant("lax")
    assert lax.require_signatures
    assert lax.require_digest


def test_no_config_file_means_nothing_required(tmp_path: Path) -> None:
    config = load_trust_config(environ={"AGENTCELL_TRUST_CONFIG": ""})
    if config.source is None:  # no /etc/agentcell/trust.yaml on this host
        assert not config.for_tenant("t").require_signatures
        assert config.for_tenant("t").keys == ()
    with pytest.raises(SpecError, match="file not found"):
        load_trust_config(environ={"AGENTCELL_TRUST_CONFIG": str(tmp_path / "absent.yaml")})


def test_unknown_fields_name_the_line_and_suggest_the_right_one() -> None:
    with pytest.raises(SpecError) as caught:
        parse_trust_config(
            "apiVersion: agentcell/v1\nkind: TrustConfig\nrequire_signature: true\n",
            file="trust.yaml",
        )
    error = caught.value
    assert error.where is not None
    assert (error.where.file, error.where.line, error.where.field) == (
        "trust.yaml",
        3,
        "require_signature",
    )
    assert error.fix is not None and "require_signatures" in error.fix


def test_a_key_entry_needs_exactly_one_source() -> None:
    with pytest.raises(SpecError) as caught:
        parse_trust_config(
            "apiVersion: agentcell/v1\nkind: TrustConfig\nkeys:\n  - name: k\n",
            file="trust.yaml",
        )
    assert "exactly one of 'path' or 'pem'" in caught.value.what
    assert caught.value.where is not None and caught.value.where.line == 4


def test_a_bad_key_file_is_reported_at_its_entry(tmp_path: Path) -> None:
    (tmp_path / "junk.pub").write_text("nothing here")
    config_file = tmp_path / "trust.yaml"
    config_file.write_text(
        "apiVersion: agentcell/v1\nkind: TrustConfig\nkeys:\n"
        "  - name: good\n    pem: |\n"
        + _indented(generate_key_pair().public.pem(), 6)
        + "  - name: junk\n    path: junk.pub\n"
    )
    with pytest.raises(SpecError) as caught:
        load_trust_config(config_file)
    where = caught.value.where
    assert where is not None
    assert (where.line, where.field) == (11, "keys[1].path")
    assert "no PEM block" in caught.value.what


def test_repeated_key_names_are_refused() -> None:
    pem = _indented(generate_key_pair().public.pem(), 6)
    with pytest.raises(SpecError, match="repeated: k"):
        parse_trust_config(
            "apiVersion: agentcell/v1\nkind: TrustConfig\nkeys:\n"
            f"  - name: k\n    pem: |\n{pem}  - name: k\n    pem: |\n{pem}"
        )


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(SpecError) as caught:
        parse_trust_config("apiVersion: agentcell/v2\nkind: Agent\n")
    assert len(caught.value.problems) == 2


def test_a_tenant_document_can_only_tighten_the_host(tmp_path: Path) -> None:
    from agentcell.spec.load import load_bundle
    from agentcell.trust.config import TrustConfig, with_tenant
    from agentcell.trust.keys import generate_key_pair

    pem = generate_key_pair(name="acme-ci").public.pem().decode()
    (tmp_path / "acme.yaml").write_text(
        "apiVersion: agentcell/v1\nkind: Tenant\nmetadata: {name: acme}\n"
        "spec:\n  trust:\n    require_signatures: true\n    keys:\n      - name: acme-ci\n"
        "        pem: |\n" + "".join(f"          {line}\n" for line in pem.splitlines())
    )
    (tenant,) = load_bundle([tmp_path / "acme.yaml"]).tenants
    host = TrustConfig(require_digest=True)
    config = with_tenant(host, tenant.document)
    acme = config.for_tenant("acme")
    assert acme.require_signatures and acme.require_digest
    assert [key.name for key in acme.keys] == ["acme-ci"]
    other = config.for_tenant("other")
    assert not other.require_signatures and other.keys == ()
