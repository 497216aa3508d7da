"""The thin path's ``up``/``down``/``ps`` on the service's engine connection (admin routes).

``up`` goes through :func:`agentcell.launch.up_files`, the one launch path ``agentcell up``
takes (admission, image trust, uids, identities, the tenants' quota when a control plane is
configured). The spec texts arrive in the request; the loader reads files, so they are
written into a private temporary directory under their base names (numbered, so two files of
the same name stay two), and a refusal names each file again as the client sent it, so the
thin path's message is the full command line's, line for line. Every call blocks, so each
runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from agentcell.daemon import api
from agentcell.errors import Error, InvalidInput

if TYPE_CHECKING:
    from agentcell.launch.apply import TenantDirectory
    from agentcell.runtime.docker.backend import DockerBackend

__all__ = ["DockerCellOperations"]


def _safe_name(name: str, index: int) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    if not base or base in (".", "..") or "\x00" in base:
        raise InvalidInput(
            f"file {index}: {name!r} is not a file name", fix="send the spec file's name"
        )
    if not base.endswith((".yaml", ".yml")):
        base += ".yaml"
    return f"{index:02d}-{base}"


def _renamed_text(text: str, names: dict[str, str]) -> str:
    for written, sent in names.items():
        text = text.replace(written, sent)
    return text


def _rename(exc: Error, names: dict[str, str]) -> None:
    """Name the client's files in ``exc`` (and every problem it holds) where it names the
    copies written here."""
    exc.what = _renamed_text(exc.what, names)
    if exc.fix is not None:
        exc.fix = _renamed_text(exc.fix, names)
    if exc.where is not None and exc.where.file is not None:
        exc.where = exc.where._replace(file=_renamed_text(exc.where.file, names))
    for problem in getattr(exc, "problems", ()):
        _rename(problem, names)


class DockerCellOperations:
    """:class:`~agentcell.daemon.app.CellOperations` on a :class:`DockerBackend`."""

    def __init__(self, backend: DockerBackend, *, directory: TenantDirectory | None) -> None:
        self._backend = backend
        self._directory = directory

    async def up(self, files: Sequence[api.SpecFile], *, policy: str) -> api.UpResult:
        """Launch the cells the files describe, as ``agentcell up`` does."""
        return await asyncio.to_thread(self._up, files, policy)

    def _up(self, files: Sequence[api.SpecFile], policy: str) -> api.UpResult:
        from agentcell.launch import up_files

        warnings: list[str] = []
        with tempfile.TemporaryDirectory(prefix="agentcell-up-") as scratch:
            paths: list[Path] = []
            names: dict[str, str] = {}
            for index, spec in enumerate(files):
                path = Path(scratch) / _safe_name(spec.name, index)
                path.write_text(spec.text, encoding="utf-8")
                paths.append(path)
                names[str(path)] = spec.name
            try:
                launched = up_files(
                    paths,
                    policy_name=policy,
                    backend=self._backend,
                    warn=lambda line: warnings.append(_renamed_text(line, names)),
                    directory=self._directory,
                )
            except Error as exc:
                _rename(exc, names)
                raise
        return api.UpResult(
            items=[
                api.UpItem(
                    action=item.result.action,
                    tenant=item.result.cell.tenant,
                    agent=item.result.cell.agent,
                    container=item.result.cell.container,
                    runtime=item.result.cell.runtime,
                    image=item.image.reference_by_digest,
                    image_requested=item.image.requested,
                    image_trust=item.image.trust,
                    warnings=list(item.image.warnings),
                )
                for item in launched
            ],
            warnings=warnings,
        )

    async def down(self, tenant: str, name: str, *, timeout_s: int) -> bool:
        """Stop and remove one cell; False when there was none."""
        return await asyncio.to_thread(self._backend.down, tenant, name, timeout_s=timeout_s)

    async def cells(self, tenant: str | None) -> list[api.CellItem]:
        """Every cell (of ``tenant``), as ``agentcell ps -o json`` shows them."""
        found = await asyncio.to_thread(self._backend.cells, tenant=tenant)
        items = []
        for cell in found:
            data: dict[str, Any] = dataclasses.asdict(cell)
            data["key"] = f"{cell.tenant}/{cell.agent}"
            data["exceptions"] = list(cell.exceptions)
            data["memory_bytes"] = data.pop("memory") or None
            data["memory_swap_bytes"] = data.pop("memory_swap") if cell.memory_swap > 0 else None
            data["pids"] = cell.pids or None
            data["cpus"] = cell.cpus or None
            items.append(api.CellItem.model_validate(data))
        return items
