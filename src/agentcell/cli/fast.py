"""The thin path: commands that the host service (``agentcell daemon serve``) carries out.

``agentcell up``/``down``/``ps`` ask the running service, which keeps the engine connection,
the loaded policy and the launch path warm, instead of importing and connecting them anew in
every command; ``agentcell sandbox ...`` and ``agentcell run`` always talk to it. Nothing here
imports typer, pydantic, the docker SDK or the launch path: :func:`dispatch` runs before the
full command line is imported (the console script's entry point), and answers only argument
lists it understands completely. Anything else (``--help``, an option it does not know, a
directory of specs, ``down -f``, no running service for ``up``/``down``/``ps``) falls through
to the full command line, which behaves as without a service. Output and exit codes are the
full commands' own; the typer commands in :mod:`agentcell.cli.sandbox_cmds` call the same
functions below.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from agentcell.errors import Error, InvalidInput

if TYPE_CHECKING:
    from agentcell.sdk import CommandResult, SandboxInfo
    from agentcell.sdk._transport import Transport

__all__ = [
    "dispatch",
    "down_via_daemon",
    "main",
    "ps_via_daemon",
    "run_once",
    "sandbox_cp",
    "sandbox_create",
    "sandbox_exec",
    "sandbox_kill",
    "sandbox_list",
    "sandbox_timeout",
    "up_via_daemon",
]

EXIT_TIMED_OUT = 124
"""A command the service ended at its timeout exits like timeout(1)'s."""
EXIT_KILLED = 137


def _err(message: str) -> None:
    from agentcell.cli.terminal import printable

    sys.stderr.write(printable(message.rstrip("\n")) + "\n")


def _print_json(kind: str, items: Any, **fields: Any) -> None:
    from agentcell.cli.output import print_json

    print_json(kind, items, **fields)


def _transport(url: str | None = None, token: str | None = None) -> Transport:
    from agentcell.sdk import discover
    from agentcell.sdk._transport import Transport

    return Transport(discover(url=url, token=token))


# -- the host service's admin routes: up, down, ps ---------------------------------------


def _spec_file(path: str) -> dict[str, str]:
    if path == "-":
        return {"name": "<stdin>", "text": sys.stdin.read()}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        from agentcell.errors import Location, SpecError

        raise SpecError(
            f"cannot read the spec: {exc}", where=Location(file=path), fix="check the path"
        ) from exc
    return {"name": path, "text": text}


def up_via_daemon(files: Sequence[str], *, policy: str, output: str) -> int:
    """``agentcell up -f FILE...`` through the service's ``POST /v1/admin/cells/up``."""
    body = {"files": [_spec_file(path) for path in files], "policy": policy}
    transport = _transport()
    try:
        answer = transport.request("POST", "/v1/admin/cells/up", json_body=body, timeout=300)
    finally:
        transport.close()
    document = answer.json()
    items = document.get("items", []) if isinstance(document, dict) else []
    warnings = document.get("warnings", []) if isinstance(document, dict) else []
    for warning in warnings:
        _err(str(warning))
    if output == "json":
        _print_json("UpResult", items)
        return 0
    for item in items:
        print(
            f"{item['action']:9} {item['tenant']}/{item['agent']} ({item['container']}) "
            f"runtime={item['runtime']} image={item['image_trust']}"
        )
    return 0


def down_via_daemon(names: Sequence[tuple[str, str]], *, timeout_s: int, output: str) -> int:
    """``agentcell down TENANT/AGENT...`` through ``POST /v1/admin/cells/down``."""
    transport = _transport()
    removed: list[tuple[str, str, bool]] = []
    try:
        for tenant, agent in names:
            answer = transport.request(
                "POST",
                "/v1/admin/cells/down",
                json_body={"tenant": tenant, "name": agent, "timeout_s": timeout_s},
                timeout=timeout_s + 60,
            )
            document = answer.json()
            gone = bool(document.get("removed")) if isinstance(document, dict) else False
            if isinstance(document, dict) and isinstance(document.get("items"), list):
                gone = any(bool(item.get("removed")) for item in document["items"])
            removed.append((tenant, agent, gone))
    finally:
        transport.close()
    if output == "json":
        _print_json(
            "DownResult", ({"tenant": t, "agent": a, "removed": gone} for t, a, gone in removed)
        )
        return 0
    for tenant, agent, gone in removed:
        print(f"{'removed' if gone else 'absent':9} {tenant}/{agent}")
    return 0


def ps_via_daemon(*, tenant: str | None, output: str) -> int:
    """``agentcell ps`` through ``GET /v1/admin/cells`` (the items ``ps -o json`` prints)."""
    transport = _transport()
    try:
        answer = transport.request(
            "GET", "/v1/admin/cells", query={"tenant": tenant} if tenant else None
        )
    finally:
        transport.close()
    document = answer.json()
    items = document.get("items", []) if isinstance(document, dict) else []
    if output == "json":
        _print_json("CellList", items)
        return 0
    from agentcell.cli.render import cells_table, print_table
    from agentcell.runtime.cells import Cell

    cells = [
        Cell(
            tenant=item["tenant"],
            agent=item["agent"],
            container=item["container"],
            container_id=item.get("container_id", ""),
            state=item["state"],
            health=item.get("health"),
            runtime=item["runtime"],
            image=item.get("image", ""),
            image_id=item.get("image_id", ""),
            cpus=item.get("cpus") or 0.0,
            memory=item.get("memory_bytes") or 0,
            memory_swap=item.get("memory_swap_bytes") or 0,
            pids=item.get("pids") or 0,
            spec_hash=item.get("spec_hash", ""),
            source=item.get("source", ""),
            exceptions=tuple(item.get("exceptions", ())),
            image_requested=item.get("image_requested", ""),
        )
        for item in items
    ]
    print_table(cells_table(cells, wide=output == "wide"), wide=output == "wide")
    return 0


# -- sandboxes -----------------------------------------------------------------------


def _sandbox_json(info: SandboxInfo) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(info)


def _expires_in(info: SandboxInfo) -> str:
    left = info.expires_at - time.time()
    return f"{max(0, round(left))}s" if info.state == "running" else "-"


def sandbox_create(template: str, *, timeout_s: float, tenant: str | None, output: str) -> int:
    """``agentcell sandbox create``: prints the new sandbox's id (``-o json``: all of it)."""
    from agentcell.sdk import Sandbox

    sandbox = Sandbox.create(template, timeout_s, tenant=tenant)
    try:
        info = sandbox.info if output == "json" else None
    finally:
        sandbox.close()
    if info is not None:
        _print_json("SandboxList", [_sandbox_json(info)])
    else:
        print(sandbox.id)
    return 0


def sandbox_list(*, tenant: str | None, output: str) -> int:
    """``agentcell sandbox ls``."""
    from agentcell.cli.terminal import printable
    from agentcell.sdk import Sandbox

    sandboxes = [s for s in Sandbox.list() if tenant is None or s.tenant == tenant]
    if output == "json":
        _print_json("SandboxList", [_sandbox_json(info) for info in sandboxes])
        return 0
    rows = [("ID", "TENANT", "TEMPLATE", "STATE", "WARM", "EXPIRES IN")]
    rows += [
        (s.id, s.tenant, s.template, s.state, "yes" if s.warm else "no", _expires_in(s))
        for s in sandboxes
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            printable(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        )
    return 0


def _exit_code(result: CommandResult) -> int:
    if result.timed_out:
        return EXIT_TIMED_OUT
    if result.exit_code is not None:
        return result.exit_code
    return EXIT_KILLED if result.killed else 1


def _writer(stream: BinaryIO) -> Callable[[str], object]:
    def write(text: str) -> None:
        stream.write(text.encode("utf-8", "surrogateescape"))
        stream.flush()

    return write


def _report_end(result: CommandResult) -> None:
    if result.truncated:
        _err("warning: the output went over the command's limit and was cut")
    if result.timed_out:
        _err(f"error: command {result.command_id} timed out (its processes were killed)")
    elif result.reason != "exited":
        _err(f"error: command {result.command_id} ended: {result.reason.replace('_', ' ')}")


def sandbox_exec(
    sandbox_id: str,
    argv: Sequence[str],
    *,
    shell: bool,
    timeout_s: float,
    cwd: str | None,
    env: dict[str, str],
    stdin: bool,
    output: str,
) -> int:
    """``agentcell sandbox exec``: the command's output as it comes (its exit code is ours),
    or with ``-o json`` its result at the end."""
    from agentcell.sdk import Sandbox

    if not argv:
        raise InvalidInput("no command to run", fix="give it after --: exec ID -- CMD ARG...")
    sandbox = Sandbox.connect(sandbox_id)
    try:
        return _run_in(
            sandbox,
            argv,
            shell=shell,
            timeout_s=timeout_s,
            cwd=cwd,
            env=env,
            stdin=stdin,
            output=output,
        )
    finally:
        sandbox.close()


def _run_in(
    sandbox: Any,
    argv: Sequence[str],
    *,
    shell: bool,
    timeout_s: float,
    cwd: str | None,
    env: dict[str, str],
    stdin: bool,
    output: str,
) -> int:
    streaming = output != "json"
    result: CommandResult = sandbox.commands.run(
        " ".join(argv) if shell else list(argv),
        timeout=timeout_s,
        cwd=cwd,
        envs=env,
        stdin=sys.stdin.buffer.read() if stdin else None,
        on_stdout=_writer(sys.stdout.buffer) if streaming else None,
        on_stderr=_writer(sys.stderr.buffer) if streaming else None,
    )
    if not streaming:
        import dataclasses

        _print_json("CommandResult", [dataclasses.asdict(result)])
    _report_end(result)
    return _exit_code(result)


def run_once(
    template: str,
    argv: Sequence[str],
    *,
    timeout_s: float,
    tenant: str | None,
    shell: bool,
    output: str,
) -> int:
    """``agentcell run TEMPLATE -- CMD...``: a fresh sandbox for one command, killed after."""
    from agentcell.sdk import Sandbox

    if not argv:
        raise InvalidInput("no command to run", fix="give it after --: run TEMPLATE -- CMD...")
    # The sandbox outlives the command's own timeout by a margin, so the command's end (and
    # not the sandbox's) is what is reported.
    with Sandbox.create(template, timeout_s + 30, tenant=tenant) as sandbox:
        return _run_in(
            sandbox,
            argv,
            shell=shell,
            timeout_s=timeout_s,
            cwd=None,
            env={},
            stdin=False,
            output=output,
        )


def _remote(text: str) -> tuple[str, str] | None:
    """``ID:PATH`` -> (ID, PATH); a local path (no ``sbx-`` id before a colon) -> None."""
    head, sep, tail = text.partition(":")
    if sep and head.startswith("sbx-") and tail:
        return head, tail
    return None


def sandbox_cp(source: str, destination: str, *, output: str) -> int:
    """``agentcell sandbox cp``: ``LOCAL ID:PATH`` uploads, ``ID:PATH LOCAL`` downloads (``-``
    is stdin or stdout); streamed both ways."""
    from agentcell.sdk import Sandbox

    src, dst = _remote(source), _remote(destination)
    if (src is None) == (dst is None):
        raise InvalidInput(
            f"cp {source!r} {destination!r}: exactly one side must be ID:PATH",
            fix="upload with cp FILE sbx-ID:/workspace/FILE, download with cp sbx-ID:PATH FILE",
        )
    sandbox_id, remote_path = src or dst  # type: ignore[misc]
    sandbox = Sandbox.connect(sandbox_id)
    try:
        if dst is not None:
            if source == "-":
                size = sandbox.files.write(remote_path, sys.stdin.buffer)
            else:
                try:
                    local = open(source, "rb")  # noqa: SIM115 - closed below
                except OSError as exc:
                    raise InvalidInput(f"cannot read {source}: {exc}") from exc
                with local:
                    size = sandbox.files.write(remote_path, local)
            item = {"sandbox": sandbox_id, "path": remote_path, "size": size, "direction": "up"}
        else:
            size = 0
            out = sys.stdout.buffer if destination == "-" else None
            try:
                target = out or open(destination + ".part", "wb")  # noqa: SIM115
            except OSError as exc:
                raise InvalidInput(f"cannot write {destination}: {exc}") from exc
            try:
                for chunk in sandbox.files.read_stream(remote_path):
                    target.write(chunk)
                    size += len(chunk)
            except BaseException:
                if out is None:
                    target.close()
                    os.unlink(destination + ".part")
                raise
            if out is None:
                target.close()
                os.replace(destination + ".part", destination)
            item = {"sandbox": sandbox_id, "path": remote_path, "size": size, "direction": "down"}
    finally:
        sandbox.close()
    if output == "json":
        _print_json("CopyResult", [item])
    elif destination != "-":
        print(f"copied {size} bytes")
    return 0


def sandbox_kill(sandbox_ids: Sequence[str], *, output: str) -> int:
    """``agentcell sandbox kill ID...``."""
    transport = _transport()
    try:
        for sandbox_id in sandbox_ids:
            transport.request("DELETE", f"/v1/sandboxes/{sandbox_id}")
    finally:
        transport.close()
    if output == "json":
        _print_json("KillResult", ({"id": i, "killed": True} for i in sandbox_ids))
    else:
        for sandbox_id in sandbox_ids:
            print(f"killed    {sandbox_id}")
    return 0


def sandbox_timeout(sandbox_id: str, seconds: float, *, output: str) -> int:
    """``agentcell sandbox timeout ID SECONDS``: expire SECONDS from now."""
    from agentcell.sdk import Sandbox

    sandbox = Sandbox.connect(sandbox_id)
    try:
        info = sandbox.set_timeout(seconds)
    finally:
        sandbox.close()
    if output == "json":
        _print_json("SandboxList", [_sandbox_json(info)])
    else:
        print(f"{info.id} expires in {_expires_in(info)}")
    return 0


# -- argument lists the thin path understands ------------------------------------------


class _NotMine(Exception):
    """An argument list for the full command line."""


class _Parsed:
    def __init__(self) -> None:
        self.positional: list[str] = []
        self.options: dict[str, list[str]] = {}
        self.rest: list[str] = []
        """What follows ``--``."""

    def one(self, name: str, default: str | None = None) -> str | None:
        values = self.options.get(name)
        return values[-1] if values else default

    def flag(self, name: str) -> bool:
        return name in self.options


def _parse(argv: Sequence[str], spec: dict[str, tuple[str, bool]]) -> _Parsed:
    """``spec``: each option string -> (its name, whether it takes a value)."""
    parsed = _Parsed()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            parsed.rest = args
            break
        if arg.startswith("-") and arg != "-":
            flag, eq, inline = arg.partition("=")
            if flag not in spec:
                raise _NotMine
            name, takes_value = spec[flag]
            if takes_value:
                if eq:
                    value = inline
                elif args:
                    value = args.pop(0)
                else:
                    raise _NotMine
                parsed.options.setdefault(name, []).append(value)
            elif eq:
                raise _NotMine
            else:
                parsed.options.setdefault(name, []).append("")
        else:
            parsed.positional.append(arg)
    return parsed


_OUTPUT = {"-o": ("output", True), "--output": ("output", True), "--json": ("json", False)}


def _output(parsed: _Parsed, allowed: tuple[str, ...] = ("text", "json")) -> str:
    output = parsed.one("output", "text") or "text"
    if output not in allowed:
        raise _NotMine  # the full command line words the refusal
    return "json" if parsed.flag("json") else output


def _number(text: str | None, default: float) -> float:
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise _NotMine from None
    if not value > 0:
        raise _NotMine
    return value


def _daemon_answers() -> bool:
    """A service runs here: its record exists and its socket accepts a connection."""
    from agentcell.sdk import running_daemon

    if os.environ.get("AGENTCELL_NO_DAEMON") == "1":
        return False
    record = running_daemon()
    if record is None or not record.socket:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(record.socket)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _plan(argv: Sequence[str]) -> Callable[[], int] | None:
    """The call that carries out ``argv``, or None for the full command line."""
    if not argv:
        return None
    command, args = argv[0], argv[1:]
    if command == "up":
        parsed = _parse(
            args,
            {
                "-f": ("file", True),
                "--file": ("file", True),
                "-p": ("policy", True),
                "--policy": ("policy", True),
                **_OUTPUT,
            },
        )
        files = parsed.options.get("file", [])
        if parsed.positional or parsed.rest or not files:
            return None
        if any(path != "-" and not Path(path).is_file() for path in files):
            return None  # directories (and missing files) as the full command says
        if not _daemon_answers():
            return None
        policy, output = parsed.one("policy", "restricted") or "restricted", _output(parsed)
        return lambda: up_via_daemon(files, policy=policy, output=output)
    if command == "down":
        parsed = _parse(args, {"--timeout": ("timeout", True), **_OUTPUT})
        if parsed.rest or not parsed.positional:
            return None
        keys = []
        for ref in parsed.positional:
            owner, sep, agent = ref.partition("/")
            if not sep:
                return None  # an agent or container name: the full command resolves it
            keys.append((owner, agent))
        from agentcell.cli.names import cell_ref

        for ref in parsed.positional:
            cell_ref(ref)
        timeout = parsed.one("timeout", "10") or "10"
        if not timeout.isdigit() or int(timeout) > 3600 or not _daemon_answers():
            return None
        output = _output(parsed)
        return lambda: down_via_daemon(keys, timeout_s=int(timeout), output=output)
    if command == "ps":
        parsed = _parse(args, {"--tenant": ("tenant", True), **_OUTPUT})
        if parsed.positional or parsed.rest:
            return None
        output = _output(parsed, ("text", "wide", "json"))
        only = parsed.one("tenant")
        if only is not None:
            from agentcell.cli.names import tenant_filter

            tenant_filter(only)
        if not _daemon_answers():
            return None
        return lambda: ps_via_daemon(tenant=only, output=output)
    if command == "run":
        parsed = _parse(
            args,
            {
                "--timeout": ("timeout", True),
                "--tenant": ("tenant", True),
                "--shell": ("shell", False),
                **_OUTPUT,
            },
        )
        if len(parsed.positional) != 1 or not parsed.rest:
            return None
        template, rest, output = parsed.positional[0], parsed.rest, _output(parsed)
        timeout_s = _number(parsed.one("timeout"), 60.0)
        tenant, shell = parsed.one("tenant"), parsed.flag("shell")
        return lambda: run_once(
            template, rest, timeout_s=timeout_s, tenant=tenant, shell=shell, output=output
        )
    if command == "sandbox" and args:
        return _sandbox_plan(args[0], args[1:])
    return None


def _sandbox_plan(sub: str, args: Sequence[str]) -> Callable[[], int] | None:
    if sub == "create":
        parsed = _parse(
            args, {"--timeout": ("timeout", True), "--tenant": ("tenant", True), **_OUTPUT}
        )
        if len(parsed.positional) != 1 or parsed.rest:
            return None
        template, output = parsed.positional[0], _output(parsed)
        timeout_s, tenant = _number(parsed.one("timeout"), 300.0), parsed.one("tenant")
        return lambda: sandbox_create(template, timeout_s=timeout_s, tenant=tenant, output=output)
    if sub == "ls":
        parsed = _parse(args, {"--tenant": ("tenant", True), **_OUTPUT})
        if parsed.positional or parsed.rest:
            return None
        tenant, output = parsed.one("tenant"), _output(parsed)
        return lambda: sandbox_list(tenant=tenant, output=output)
    if sub == "exec":
        parsed = _parse(
            args,
            {
                "--timeout": ("timeout", True),
                "--cwd": ("cwd", True),
                "-e": ("env", True),
                "--env": ("env", True),
                "--shell": ("shell", False),
                "-i": ("stdin", False),
                "--stdin": ("stdin", False),
                **_OUTPUT,
            },
        )
        if len(parsed.positional) != 1 or not parsed.rest:
            return None
        env = {}
        for pair in parsed.options.get("env", []):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                return None
            env[key] = value
        sandbox_id, rest, output = parsed.positional[0], parsed.rest, _output(parsed)
        timeout_s, cwd = _number(parsed.one("timeout"), 60.0), parsed.one("cwd")
        shell, stdin = parsed.flag("shell"), parsed.flag("stdin")
        return lambda: sandbox_exec(
            sandbox_id,
            rest,
            shell=shell,
            timeout_s=timeout_s,
            cwd=cwd,
            env=env,
            stdin=stdin,
            output=output,
        )
    if sub == "cp":
        parsed = _parse(args, dict(_OUTPUT))
        if len(parsed.positional) != 2 or parsed.rest:
            return None
        (source, destination), output = parsed.positional, _output(parsed)
        return lambda: sandbox_cp(source, destination, output=output)
    if sub == "kill":
        parsed = _parse(args, dict(_OUTPUT))
        if not parsed.positional or parsed.rest:
            return None
        ids, output = parsed.positional, _output(parsed)
        return lambda: sandbox_kill(ids, output=output)
    if sub == "timeout":
        parsed = _parse(args, dict(_OUTPUT))
        if len(parsed.positional) != 2 or parsed.rest:
            return None
        sandbox_id, seconds, output = parsed.positional[0], parsed.positional[1], _output(parsed)
        timeout_s = _number(seconds, 0.0)
        return lambda: sandbox_timeout(sandbox_id, timeout_s, output=output)
    return None


def dispatch(argv: Sequence[str]) -> int | None:
    """Carry out ``argv`` through the host service and return the exit code, or None when
    the full command line must (see the module's docstring)."""
    try:
        plan = _plan(argv)
        if plan is None:
            return None
        return plan()
    except _NotMine:
        return None
    except Error as exc:
        _err(f"error: {exc.diagnostics()}")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def main() -> None:
    """The ``agentcell`` console script: the thin path when it applies, else the full CLI."""
    code = dispatch(sys.argv[1:])
    if code is not None:
        sys.stdout.flush()
        sys.exit(code)
    from agentcell.cli.main import main as full_main

    full_main()
