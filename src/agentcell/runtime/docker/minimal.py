"""Minimal images: built multi-stage FROM the offline base, then checked for what they contain.

``python-runtime`` is built in: the Python interpreter, its shared libraries and the standard
library copied into an empty (``scratch``) image, so an agent built FROM it has no shell, no
coreutils, no package manager and no compiler. Any other image is built from a context folder
with the build arguments ``BASE`` (the offline Debian base) and ``RUNTIME`` (python-runtime).

After a build, :func:`report` reads the image's filesystem (exported from a created, never
started, container) and says how big it is, how many files it has, which programs it holds,
and whether a shell, a package manager or a compiler is among them. :func:`build` refuses an
image holding one of those unless the caller allows it (the sandbox image needs its shell).
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import uuid
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from importlib.resources import as_file
from pathlib import Path
from typing import IO, Any, Literal, cast

import docker

from agentcell.cell.paths import asset
from agentcell.errors import BackendError, ImageError, ImageNotFound
from agentcell.runtime.docker.client import translated
from agentcell.runtime.docker.images import BASE_IMAGE, IMAGE_LABEL, IMAGE_VERSION, run_build

__all__ = [
    "BUILTIN",
    "PYTHON_RUNTIME",
    "Capability",
    "ImageReport",
    "build",
    "build_python_runtime",
    "report",
]

Capability = Literal["shell", "package-manager", "compiler"]
PYTHON_RUNTIME = f"agentcell/python-runtime:{IMAGE_VERSION}"
BUILTIN = {"python-runtime": PYTHON_RUNTIME}

_BIN_DIRS = ("bin/", "sbin/", "usr/bin/", "usr/sbin/", "usr/local/bin/", "usr/local/sbin/")
_SHELLS = frozenset({"sh", "bash", "dash", "ash", "zsh", "ksh", "mksh", "busybox", "rbash"})
_PACKAGE_MANAGERS = frozenset(
    {"dpkg", "apt", "apt-get", "pip", "pip3", "rpm", "yum", "dnf", "microdnf", "apk", "opkg"}
)
_COMPILERS = frozenset({"cc", "gcc", "g++", "c++", "clang", "clang++", "tcc", "as", "ld", "go"})
_COMPILER_PREFIXES = ("gcc-", "g++-", "clang-", "x86_64-linux-gnu-gcc")


@dataclass(frozen=True, kw_only=True)
class ImageReport:
    """What an image holds, read from its exported filesystem."""

    reference: str
    image_id: str
    size_bytes: int
    file_count: int
    symlink_count: int
    programs: tuple[str, ...]
    """Names of the files and links in bin and sbin directories."""
    shells: tuple[str, ...]
    package_managers: tuple[str, ...]
    compilers: tuple[str, ...]
    allowed: frozenset[Capability] = frozenset()

    @property
    def found(self) -> dict[Capability, tuple[str, ...]]:
        """Each capability the image has, with the programs that give it."""
        kinds: dict[Capability, tuple[str, ...]] = {
            "shell": self.shells,
            "package-manager": self.package_managers,
            "compiler": self.compilers,
        }
        return {kind: names for kind, names in kinds.items() if names}

    @property
    def violations(self) -> dict[Capability, tuple[str, ...]]:
        """Capabilities the image has that were not asked for."""
        return {kind: names for kind, names in self.found.items() if kind not in self.allowed}


def build_python_runtime(
    client: docker.DockerClient,
    *,
    base: str = BASE_IMAGE,
    progress: Callable[[str], None] = lambda _m: None,
) -> ImageReport:
    """Build :data:`PYTHON_RUNTIME` FROM ``base`` and report on it.

    Raises:
        ImageError: the build failed, or the result holds a shell, package manager or compiler.
    """
    assets = asset("minimal", "python-runtime")
    with as_file(assets) as context:
        return build(
            client, PYTHON_RUNTIME, Path(context), base=base, name="python-runtime",
            progress=progress,
        )  # fmt: skip


def build(
    client: docker.DockerClient,
    reference: str,
    context: Path,
    *,
    base: str = BASE_IMAGE,
    runtime: str = PYTHON_RUNTIME,
    allow: Collection[Capability] = (),
    name: str | None = None,
    progress: Callable[[str], None] = lambda _m: None,
) -> ImageReport:
    """Build ``context``'s Dockerfile as ``reference`` offline, then check what it holds.

    The build gets ``BASE`` and ``RUNTIME`` as build arguments and no network.

    Raises:
        ImageError: the context has no Dockerfile, the build failed, or the image holds a shell,
            package manager or compiler not in ``allow`` (the image is then removed again,
            unless the tag already pointed at it before).
    """
    if not (context / "Dockerfile").is_file():
        raise ImageError(
            f"{context} has no Dockerfile", fix="point --context at a folder with a Dockerfile"
        )
    previous = _image_id(client, reference)
    progress(f"{reference}: building from {context}")
    run_build(
        client,
        context=context,
        reference=reference,
        buildargs={"BASE": base, "RUNTIME": runtime},
        labels={IMAGE_LABEL: name or reference, "org.opencontainers.image.base.name": base},
        fix=f"fix the Dockerfile in {context}",
    )
    result = report(client, reference, allow=allow)
    if result.violations:
        if previous != result.image_id:
            with contextlib.suppress(BackendError), translated("remove image", subject=reference):
                client.images.remove(reference)
        found = "; ".join(
            f"{kind}: {', '.join(names)}" for kind, names in result.violations.items()
        )
        raise ImageError(
            f"{reference} is not minimal ({found}); the image was not kept",
            fix="copy only what the agent needs into a FROM scratch (or python-runtime) stage, "
            "or allow it explicitly (--allow shell, --allow package-manager, --allow compiler)",
        )
    return result


def report(
    client: docker.DockerClient, reference: str, *, allow: Collection[Capability] = ()
) -> ImageReport:
    """Read what image ``reference`` holds.

    Raises:
        ImageError: the image is not on this host.
        BackendError: the engine failed to export it.
    """
    with translated("inspect image", subject=reference):
        image = client.images.get(reference)
    files_count = links = 0
    programs: set[str] = set()
    with _exported(client, reference) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                files_count += 1
            elif member.issym() or member.islnk():
                links += 1
            else:
                continue
            path = member.name.lstrip("./")
            directory, _, base_name = path.rpartition("/")
            if f"{directory}/" in _BIN_DIRS:
                programs.add(base_name)
    return ImageReport(
        reference=reference,
        image_id=str(image.id),
        size_bytes=int(image.attrs.get("Size", 0)),
        file_count=files_count,
        symlink_count=links,
        programs=tuple(sorted(programs)),
        shells=tuple(sorted(programs & _SHELLS)),
        package_managers=tuple(sorted(programs & _PACKAGE_MANAGERS)),
        compilers=tuple(
            sorted(p for p in programs if p in _COMPILERS or p.startswith(_COMPILER_PREFIXES))
        ),
        allowed=frozenset(allow),
    )


@contextlib.contextmanager
def _exported(client: docker.DockerClient, reference: str) -> Iterator[IO[bytes]]:
    """The image's filesystem as a tar stream, from a container that is created, never started,
    and always removed."""
    name = f"agentcell-report-{uuid.uuid4().hex[:12]}"
    with translated("export image", subject=reference):
        # The command is never run; scratch images have none, and create needs one.
        container = client.containers.create(
            reference, command=["/nonexistent"], name=name, network_mode="none"
        )
    try:
        with translated("export image", subject=reference):
            # docker-py yields bytes chunks; its type stubs say str.
            chunks = cast("Iterator[bytes]", container.export())
            yield io.BufferedReader(_ChunkStream(chunks), buffer_size=1 << 16)
    finally:
        with contextlib.suppress(BackendError), translated("remove", subject=name):
            container.remove(force=True)


class _ChunkStream(io.RawIOBase):
    """A readable stream over the SDK's chunk iterator, for ``tarfile`` in stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _image_id(client: docker.DockerClient, reference: str) -> str | None:
    try:
        with translated("inspect image", subject=reference):
            image_id = str(client.images.get(reference).id)
    except ImageNotFound:
        return None
    return image_id
