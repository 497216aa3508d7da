"""The identity CLI's pure parts: the sparkline, and `ca init` writing a usable state."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcell.cli.identity_cmds import ca_init, sparkline
from agentcell.controlplane.settings import ControlPlanePaths
from agentcell.identity.ca import CertificateAuthority


def test_sparkline_scales_between_min_and_max() -> None:
    assert sparkline([]) == ""
    assert sparkline([3, 3, 3]) == "▁▁▁"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([10.0, 0.0]) == "█▁"


def test_ca_init_makes_ca_server_cert_and_admin_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_init(state_dir=tmp_path, trust_domain="corp.example", san=["cp.corp.example"], force=False)
    out = capsys.readouterr().out
    assert "corp.example" in out
    paths = ControlPlanePaths(tmp_path, tmp_path / "run")
    assert paths.admin_token.stat().st_mode & 0o777 == 0o600
    assert len(paths.admin_token.read_text().strip()) >= 40
    assert CertificateAuthority.load(tmp_path).trust_domain == "corp.example"
    assert b"cp.corp.example" not in paths.admin_token.read_bytes()
