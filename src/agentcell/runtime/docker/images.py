"""Building agentcell's own images without a registry.

Hosts here reach Debian's package mirrors but no container registry, so nothing can be pulled.
:func:`bootstrap` therefore builds a Debian root filesystem with ``mmdebstrap``, imports it as
:data:`BASE_IMAGE`, and builds every image under ``agentcell/assets/images/<name>/`` FROM it.
On a host that has a registry, a normal base image (``debian:bookworm-slim``,
``python:3.11-slim``) can be named instead and the mmdebstrap step is skipped.

Rerunning is cheap: the base is only rebuilt when asked to, and the image builds hit Docker's
build cache unless a Dockerfile or script changed, in which case the tag moves to the new image.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources import as_file
from pathlib import Path
from typing import Any

import docker

from agentcell.cell.paths import asset
from agentcell.errors import HostError, ImageError, ImageNotFound
from agentcell.runtime.docker.client import translated

__all__ = [
    "BASE_IMAGE",
    "BASE_REPOSITORY",
    "IMAGE_LABEL",
    "IMAGE_VERSION",
    "BuiltImage",
    "bootstrap",
    "image_names",
    "image_reference",
    "run_build",
]

# The mmdebstrap base is tagged with its Debian suite; bookworm is the default.
BASE_REPOSITORY = "agentcell/base"
BASE_IMAGE = f"{BASE_REPOSITORY}:bookworm"
# The tag of every image built here; kept equal to the package version, which the examples name.
IMAGE_VERSION = "0.1.0"
# Every image built here carries this label, with the image's name as the value. Not under
# org.agentcell.*: those labels are agentcell's record on a cell, and admission refuses images
# that carry any (an image must not be able to claim to be a cell).
IMAGE_LABEL = "org.opencontainers.image.title"
_RESERVED_PREFIX = "org.agentcell."

# mmdebstrap's essential variant is the smallest Debian that still has sh and coreutils, which
# sandbox users and `docker exec` read-backs need; python3 (not python3-minimal) brings the stdlib.
# Documentation, manual pages and translations are left out: nothing in a cell reads them.
_MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--include=python3",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    # mmdebstrap copies the host's resolv.conf and hostname into the tree; the engine supplies
    # both at run time, so the host's values must not be baked into a shared image.
    '--customize-hook=: > "$1/etc/resolv.conf"; : > "$1/etc/hostname"',
)
# An imported tarball has no image config; give it what a Debian base image normally has.
_BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    f"LABEL {IMAGE_LABEL}=base",
)
_MMDEBSTRAP_TIMEOUT_SECONDS = 1800
_LOG_TAIL_LINES = 20
_SUITE = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    """An image that bootstrap made or found up to date."""

    reference: str
    image_id: str
    size_bytes: int
    reserved_labels: tuple[str, ...] = ()
    """``org.agentcell.*`` labels the image carries (an older agentcell set one)."""


def image_names() -> list[str]:
    """Names of the images agentcell ships: the asset folders that hold a Dockerfile."""
    root = asset("images")
    return sorted(entry.name for entry in root.iterdir() if (entry / "Dockerfile").is_file())


def image_reference(name: str) -> str:
    """The tag bootstrap gives the image built from ``assets/images/<name>/``."""
    return f"agentcell/{name}:{IMAGE_VERSION}"


def bootstrap(
    client: docker.DockerClient,
    *,
    base: str | None = None,
    suite: str = "bookworm",
    force: bool = False,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[BuiltImage]:
    """Make the base image if needed, then build every shipped image FROM it.

    With ``base`` None the base is ``agentcell/base:<suite>`` (:data:`BASE_IMAGE` for the
    default suite), built offline from Debian and kept once it exists; it is listed first in
    the result. With ``base`` given, that image is
    the FROM of every build (the engine pulls it if it is missing) and is not listed.
    ``force`` rebuilds the mmdebstrap base and builds every image without the build cache.

    Raises:
        HostError: mmdebstrap is not installed.
        ImageError: the rootfs, the import or a build failed; carries the last log lines.
        EngineUnavailable: the engine went away.
    """
    built: list[BuiltImage] = []
    if base is None:
        if not _SUITE.fullmatch(suite):
            raise ImageError(
                f"{suite!r} is not a Debian suite name",
                fix="name a suite such as bookworm or trixie",
            )
        base_image = _ensure_base(client, suite=suite, force=force, progress=progress)
        built.append(base_image)
        base = base_image.reference
    for name in image_names():
        built.append(_build(client, name, base=base, force=force, progress=progress))
    built.extend(_build_minimal(client, base=base, progress=progress))
    return built


def _build_minimal(
    client: docker.DockerClient, *, base: str, progress: Callable[[str], None]
) -> list[BuiltImage]:
    """The minimal python-runtime image, then the reference agent FROM it (no shell inside).

    Both are checked after the build: an image that holds a shell, package manager or
    compiler is refused and not kept.
    """
    from agentcell.runtime.docker.agent_image import IMAGE_NAME, build_context
    from agentcell.runtime.docker.minimal import PYTHON_RUNTIME, build, build_python_runtime

    reports = [build_python_runtime(client, base=base, progress=progress)]
    with tempfile.TemporaryDirectory(prefix="agentcell-agent-") as workdir:
        context = build_context(Path(workdir))
        reports.append(
            build(
                client,
                image_reference(IMAGE_NAME),
                context,
                base=base,
                runtime=PYTHON_RUNTIME,
                name=IMAGE_NAME,
                progress=progress,
            )
        )
    for report in reports:
        progress(
            f"{report.reference}: {report.size_bytes / 1e6:.1f} MB, {report.file_count} files, "
            f"programs: {', '.join(report.programs) or 'none'}; no shell, package manager "
            "or compiler"
        )
    return [
        BuiltImage(reference=r.reference, image_id=r.image_id, size_bytes=r.size_bytes)
        for r in reports
    ]


def _ensure_base(
    client: docker.DockerClient, *, suite: str, force: bool, progress: Callable[[str], None]
) -> BuiltImage:
    """Return the mmdebstrap base image, building and importing it when missing or forced."""
    reference = f"{BASE_REPOSITORY}:{suite}"
    if not force:
        existing = _find(client, reference)
        if existing is not None and not existing.reserved_labels:
            progress(f"{reference}: present ({existing.size_bytes / 1e6:.0f} MB)")
            return existing
        if existing is not None:
            # Built by an older agentcell with an org.agentcell.* label, which every image
            # FROM it inherits and admission refuses; a build cannot remove a label.
            progress(f"{reference}: rebuilding (it carries {', '.join(existing.reserved_labels)})")
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise HostError(
            "mmdebstrap is not installed, so the offline base image cannot be built",
            fix="run scripts/setup.sh (it installs mmdebstrap), or pass a base image that "
            "the engine can pull",
        )
    with tempfile.TemporaryDirectory(prefix="agentcell-rootfs-") as workdir:
        rootfs = Path(workdir) / "rootfs.tar"
        progress(f"{reference}: building a Debian {suite} rootfs with mmdebstrap")
        _run_mmdebstrap(mmdebstrap, suite, rootfs)
        progress(f"{reference}: importing the rootfs")
        with translated("import image", subject=reference):
            result: Any = client.api.import_image_from_file(
                str(rootfs), repository=BASE_REPOSITORY, tag=suite, changes=list(_BASE_CHANGES)
            )
        _raise_on_stream_error(_json_lines(result), action=f"importing {reference}")
    image = _find(client, reference)
    if image is None:
        raise ImageError(
            f"the engine accepted the rootfs but {reference} does not exist afterwards",
            fix="check the dockerd log, then run `agentcell image bootstrap --force`",
        )
    progress(f"{reference}: imported ({image.size_bytes / 1e6:.0f} MB)")
    return image


def _run_mmdebstrap(mmdebstrap: str, suite: str, target: Path) -> None:
    """Write a rootfs tarball for ``suite`` to ``target``; raise with its log tail on failure."""
    command = [mmdebstrap, *_MMDEBSTRAP_OPTIONS, suite, str(target)]
    try:
        finished = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=_MMDEBSTRAP_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as exc:
        raise ImageError(
            f"mmdebstrap did not finish within {_MMDEBSTRAP_TIMEOUT_SECONDS} s",
            fix="check that the host reaches its Debian mirror (apt-get update)",
        ) from exc
    except OSError as exc:
        raise HostError(
            f"cannot run mmdebstrap: {exc}", fix="run scripts/setup.sh to reinstall it"
        ) from exc
    if finished.returncode != 0:
        raise ImageError(
            f"mmdebstrap failed with exit code {finished.returncode}:\n"
            + _tail((finished.stderr or finished.stdout).splitlines()),
            fix="check that the host reaches its Debian mirror (apt-get update) and that "
            "mmdebstrap runs as root",
        )


def _build(
    client: docker.DockerClient,
    name: str,
    *,
    base: str,
    force: bool,
    progress: Callable[[str], None],
) -> BuiltImage:
    """Build ``assets/images/<name>/`` FROM ``base`` and tag it; cached steps make reruns fast."""
    reference = image_reference(name)
    previous = _find(client, reference)
    assets = asset("images", name)
    with as_file(assets) as context:
        log = run_build(
            client,
            context=Path(context),
            reference=reference,
            buildargs={"BASE": base},
            labels={
                IMAGE_LABEL: name,
                "org.opencontainers.image.version": IMAGE_VERSION,
                "org.opencontainers.image.base.name": base,
            },
            nocache=force,
            fix=f"fix src/agentcell/assets/images/{name}/ or the base image {base}, "
            "then rerun `agentcell image bootstrap`",
        )
    image = _find(client, reference)
    if image is None:
        raise ImageError(
            f"the build of {reference} ended without the tag:\n{_tail(log)}",
            fix="check the dockerd log, then run `agentcell image bootstrap --force`",
        )
    unchanged = previous is not None and previous.image_id == image.image_id
    state = "up to date" if unchanged else "built"
    progress(f"{reference}: {state} ({image.size_bytes / 1e6:.0f} MB)")
    return image


def run_build(
    client: docker.DockerClient,
    *,
    context: Path,
    reference: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    fix: str,
    nocache: bool = False,
) -> deque[str]:
    """Build ``context`` as ``reference`` offline; return the tail of the build log.

    Every agentcell build goes through here: no pull, intermediate containers removed, and
    no network, since a step that needs one is a bug in an offline build.

    Raises:
        ImageError: a build step failed; carries the last log lines and ``fix``.
    """
    log: deque[str] = deque(maxlen=_LOG_TAIL_LINES)
    with translated("build image", subject=reference):
        for chunk in client.api.build(
            path=str(context),
            tag=reference,
            buildargs=buildargs,
            labels=labels,
            nocache=nocache,
            pull=False,
            rm=True,
            forcerm=True,
            network_mode="none",
            decode=True,
        ):
            if not isinstance(chunk, dict):
                continue
            text = chunk.get("stream")
            if isinstance(text, str):
                log.extend(line for line in text.splitlines() if line.strip())
            error = chunk.get("error")
            if error is not None:
                log.extend(str(error).splitlines())
                raise ImageError(f"building {reference} failed:\n{_tail(log)}", fix=fix)
    return log


def _find(client: docker.DockerClient, reference: str) -> BuiltImage | None:
    """The image tagged ``reference``, or None when there is none."""
    try:
        with translated("inspect image", subject=reference):
            image = client.images.get(reference)
    except ImageNotFound:
        return None
    return BuiltImage(
        reference=reference,
        image_id=str(image.id),
        size_bytes=int(image.attrs.get("Size", 0)),
        reserved_labels=tuple(sorted(k for k in image.labels if k.startswith(_RESERVED_PREFIX))),
    )


def _json_lines(result: object) -> list[dict[str, Any]]:
    """Decode the newline-separated JSON messages the engine answers an import with."""
    text = result.decode() if isinstance(result, bytes) else str(result or "")
    messages: list[dict[str, Any]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            messages.append({"status": line})
            continue
        if isinstance(message, dict):
            messages.append(message)
    return messages


def _raise_on_stream_error(messages: Iterable[dict[str, Any]], *, action: str) -> None:
    """Raise ImageError when the engine reported a failure inside a 200 response."""
    for message in messages:
        error = message.get("error")
        if error is not None:
            raise ImageError(
                f"{action} failed: {error}",
                fix="check the dockerd log, then run `agentcell image bootstrap --force`",
            )


def _tail(lines: Iterable[str]) -> str:
    """The last log lines, indented under the message they explain."""
    kept = deque((line.rstrip() for line in lines), maxlen=_LOG_TAIL_LINES)
    return "\n".join(f"    {line}" for line in kept)
