"""The synchronous SDK against a real host service over real TLS: warm sandboxes, streamed
commands that survive a cut connection, timeouts, background commands, streamed files,
errors with the service's words."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import time
from pathlib import Path

import docker
import pytest

from agentcell.sdk import (
    AuthenticationFailed,
    CommandHandle,
    DaemonUnavailable,
    FileRefused,
    Sandbox,
    SandboxNotFound,
    TemplateNotFound,
    TimeoutRefused,
)
from agentcell.sdk._transport import Transport

from .conftest import TEMPLATE, Service

pytestmark = pytest.mark.integration


def test_a_warm_sandbox_runs_a_command_and_is_killed_on_leaving_the_block(
    service: Service,
) -> None:
    with service.create() as sbx:
        info = sbx.info
        assert info.state == "running"
        assert info.warm
        result = sbx.commands.run(["python3", "-c", "import os; print(os.getuid())"])
        assert result.exit_code == 0
        assert int(result.stdout) != 0  # never root
    assert service.state_of(sbx.id) in ("killed", None)


def test_a_thousand_lines_with_sleeps_arrive_in_order_and_complete(service: Service) -> None:
    seen: list[str] = []
    with service.create() as sbx:
        result = sbx.commands.run(
            "for i in $(seq 1 1000); do echo line $i; case $i in *00) sleep 0.2;; esac; done",
            on_stdout=seen.append,
            timeout=120,
        )
    want = "".join(f"line {i}\n" for i in range(1, 1001))
    assert result.exit_code == 0
    assert result.stdout == want
    assert "".join(seen) == want
    assert len(seen) > 1  # streamed as it came, not in one piece at the end


def test_a_stream_cut_by_the_client_resumes_without_loss_or_duplicates(
    service: Service,
) -> None:
    with service.create() as sbx:
        # Each quiet spell is longer than the client's idle timeout: the connection is
        # dropped there and the output asked again after the last frame taken, many times.
        sbx.stream_idle_timeout = 0.3
        seen: list[str] = []
        result = sbx.commands.run(
            "for i in $(seq 1 20); do echo out $i; echo err $i >&2; sleep 0.5; done",
            on_stdout=seen.append,
            timeout=60,
        )
    assert result.stdout == "".join(f"out {i}\n" for i in range(1, 21))
    assert result.stderr == "".join(f"err {i}\n" for i in range(1, 21))
    assert "".join(seen) == result.stdout


def test_a_stream_whose_socket_is_shut_down_under_it_resumes(service: Service) -> None:
    opened: list[http.client.HTTPConnection] = []

    class Recording(Transport):
        def _connect(self, timeout: float) -> http.client.HTTPConnection:
            connection = super()._connect(timeout)
            opened.append(connection)
            return connection

    cuts = 0
    with service.create() as sbx:
        sbx.transport.close()
        sbx.transport = Recording(sbx.transport.address)

        def cut(text: str) -> None:
            # Shut the stream's socket down mid-stream, as a dropped network would.
            nonlocal cuts
            if "line 5\n" in text and not cuts:
                cuts += 1
                sock = opened[-1].sock
                assert sock is not None
                sock.shutdown(socket.SHUT_RDWR)

        result = sbx.commands.run(
            "for i in $(seq 1 10); do echo line $i; sleep 0.2; done", on_stdout=cut, timeout=60
        )
    sbx.transport.close()  # its own transport, not the process's shared one
    assert cuts == 1
    assert len(opened) >= 2  # the first stream, then the resumed one
    assert result.stdout == "".join(f"line {i}\n" for i in range(1, 11))


def test_a_command_over_its_timeout_is_killed_with_its_children(
    service: Service, docker_client: docker.DockerClient
) -> None:
    with service.create() as sbx:
        started = time.monotonic()
        # A child, and a classic daemon: its parent left the session and exited, so it is the
        # cell init's child in a session that is not the command's.
        daemon = "setsid sh -c 'sleep 300 > /dev/null 2>&1 &'"
        result = sbx.commands.run(f"{daemon}; sleep 300 & sleep 300; echo never", timeout=2)
        assert time.monotonic() - started < 30
        assert result.timed_out
        assert result.reason == "timeout"
        assert "never" not in result.stdout
        container = docker_client.containers.get(sbx.info.cell)
        left: list[list[str]] = []
        for _ in range(20):  # the kill is sent at the timeout; give the kernel a moment
            top = container.top(ps_args="-eo pid,args")
            left = [row for row in top["Processes"] if "sleep 300" in " ".join(row)]
            if not left:
                break
            time.sleep(0.25)
        assert left == []


def test_a_background_command_is_waited_for_streamed_and_killed(service: Service) -> None:
    with service.create() as sbx:
        handle = sbx.commands.run("echo begun; sleep 0.5; echo done", background=True)
        assert isinstance(handle, CommandHandle)
        result = handle.wait()
        assert (result.exit_code, result.stdout) == (0, "begun\ndone\n")
        pieces: list[str] = []
        assert handle.stream(on_stdout=pieces.append).stdout == "begun\ndone\n"
        assert "".join(pieces) == "begun\ndone\n"

        endless = sbx.commands.run("echo up; sleep 600", background=True)
        endless.kill()
        ended = endless.wait(timeout=30)
        assert ended.killed
        assert ended.stdout == "up\n"


def test_argv_cwd_env_and_stdin_reach_the_command(service: Service) -> None:
    with service.create() as sbx:
        result = sbx.commands.run(
            ["sh", "-c", 'pwd; echo "$GREETING"; cat'],
            cwd="/workspace",
            envs={"GREETING": "hello there"},
            stdin=b"from stdin\n",
        )
    assert result.stdout == "/workspace\nhello there\nfrom stdin\n"


def test_a_50_mib_file_goes_in_and_out_streamed(service: Service, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with local.open("wb") as out:
        for _ in range(50):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            out.write(block)
    with service.create() as sbx:
        with local.open("rb") as source:
            assert sbx.files.write("/workspace/big.bin", source) == 50 * 1024 * 1024
        back = hashlib.sha256()
        chunks = 0
        for chunk in sbx.files.read_stream("/workspace/big.bin"):
            back.update(chunk)
            chunks += 1
        assert back.hexdigest() == digest.hexdigest()
        assert chunks > 1
        listed = {entry.name: entry for entry in sbx.files.list("/workspace")}
        assert listed["big.bin"].size == 50 * 1024 * 1024
        assert listed["big.bin"].kind == "file"
        sbx.files.remove("/workspace/big.bin")
        assert "big.bin" not in {entry.name for entry in sbx.files.list("/workspace")}


def test_a_file_written_in_one_sandbox_is_absent_from_the_next(service: Service) -> None:
    with service.create() as first:
        first.files.write("/tmp/secret", b"only mine")
        assert first.files.read("/tmp/secret") == b"only mine"
    with service.create() as second, pytest.raises(FileRefused) as caught:
        second.files.read("/tmp/secret")
    assert caught.value.status == 404


@pytest.mark.parametrize("path", ["/etc/passwd", "/tmp/../etc/shadow", "relative"])
def test_paths_outside_the_tmpfs_are_refused_with_the_reason(service: Service, path: str) -> None:
    with service.create() as sbx:
        with pytest.raises(FileRefused) as caught:
            sbx.files.write(path, b"x")
        assert caught.value.reason
        assert caught.value.status in (400, 404)
        assert sbx.commands.run("true").exit_code == 0  # still serving


def test_an_upload_over_the_tmpfs_size_is_refused_and_the_service_serves_on(
    service: Service,
) -> None:
    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            buffer[:] = b"\0" * len(buffer)
            return len(buffer)

    with service.create() as sbx:
        with pytest.raises(FileRefused) as caught:
            sbx.files.write("/tmp/huge", io.BufferedReader(Endless()))  # 64 MiB tmpfs
        assert caught.value.status == 413
        assert sbx.commands.run("echo alive").stdout == "alive\n"


def test_set_timeout_extends_and_over_the_maximum_is_refused(service: Service) -> None:
    with service.create(timeout=60) as sbx:
        before = sbx.info.expires_at
        assert sbx.set_timeout(300).expires_at > before
        with pytest.raises(TimeoutRefused):
            sbx.set_timeout(10**6)


def test_errors_carry_the_service_s_words(service: Service) -> None:
    with pytest.raises(TemplateNotFound) as unknown:
        service.create("no-such-template")
    assert unknown.value.fix
    with pytest.raises(AuthenticationFailed):
        Sandbox.create(TEMPLATE, url=service.url, ca=service.ca, token="not-a-token")
    with pytest.raises(SandboxNotFound):
        Sandbox.connect(
            "sbx-0000000000000000", url=service.url, ca=service.ca, token=service.tenant_token
        )


def test_another_tenant_s_token_sees_no_sandbox(service: Service) -> None:
    with service.create() as sbx:
        with pytest.raises(SandboxNotFound):
            Sandbox.connect(sbx.id, url=service.url, ca=service.ca, token=service.other_token)
        theirs = Sandbox.list(url=service.url, ca=service.ca, token=service.other_token)
        assert sbx.id not in {s.id for s in theirs}
        mine = Sandbox.list(url=service.url, ca=service.ca, token=service.tenant_token)
        assert sbx.id in {s.id for s in mine}


def test_the_unix_socket_found_from_the_service_record_serves_the_same(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in service.env(service.tenant_token).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AGENTCELL_DAEMON_URL", raising=False)
    with Sandbox.create(TEMPLATE) as sbx:
        service.made.append(sbx.id)
        assert sbx.address.is_unix
        assert sbx.commands.run("echo via socket").stdout == "via socket\n"


def test_the_service_s_certificate_is_checked_against_its_ca(service: Service) -> None:
    # The system's roots do not vouch for the service's own CA: refused, never skipped.
    with pytest.raises(DaemonUnavailable, match="certificate verify failed"):
        Sandbox.list(url=service.url, ca="/etc/ssl/certs/ca-certificates.crt", token="x")
