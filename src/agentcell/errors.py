"""The one error tree of agentcell.

Every failure a user can act on is an :class:`Error` carrying *what* went wrong, *where*
(file, line and field when they are known) and *how to fix it*. Third-party and OS errors are
translated into this tree once, at the boundary where they enter, with ``raise ... from exc``:
the docker SDK's in :func:`agentcell.runtime.docker.client.translated`, the registry's in
:mod:`agentcell.trust.registry`, the control plane's in :mod:`agentcell.controlplane.client`.
The CLI catches only :class:`Error` and exits with its ``exit_code``.

The whole tree, wherever a class is declared (a unit test holds this drawing to the code)::

    Error                               (exit 1 unless a class below says otherwise)
    ├── SpecError                       a spec file cannot be read, parsed or validated  (exit 2)
    ├── AdmissionError                  policy refused a spec; carries every finding     (exit 2)
    ├── InvalidInput                    an argument or option names nothing              (exit 2)
    │   └── InvalidRequest              sdk: the host service refused a request's input  (exit 2)
    ├── HostError                       this host lacks something (runtime, tool, file)  (exit 3)
    │   ├── Unreachable                 a service agentcell needs does not answer        (exit 3)
    │   │   ├── EngineUnavailable       the Docker Engine                                (exit 3)
    │   │   ├── ControlPlaneUnavailable the control plane (or its CA bundle is missing)  (exit 3)
    │   │   ├── RegistryUnavailable     an OCI registry                                  (exit 3)
    │   │   └── DaemonUnavailable       sdk: the host service (`agentcell daemon serve`) (exit 3)
    │   └── KernelReadError             verify.procfs: a kernel file cannot be read      (exit 3)
    ├── BackendError                    the engine refused or failed an operation        (exit 1)
    │   ├── CellNotFound                no cell (or engine object) by that name          (exit 2)
    │   └── CellConflict                a name is taken by something agentcell does not
    │                                   own, or by another tenant's cell                 (exit 2)
    ├── ImageError                      an image cannot be built, pushed or used         (exit 1)
    │   └── ImageNotFound               no such image on this host                       (exit 2)
    ├── TrustError                      an image is unsigned, wrongly signed, tampered
    │                                   with, or its registry refused to answer          (exit 2)
    ├── IdentityError                   identity.errors: a CA, certificate, CSR or join
    │   │                               token problem                                    (exit 1)
    │   ├── CANotInitialised            the control plane has no CA yet                  (exit 3)
    │   └── EnrolmentRefused            a join token or CSR was refused                  (exit 1)
    ├── ControlPlaneError               controlplane.client: the control plane refused a
    │                                   request or answered nonsense                     (exit 1)
    ├── SettingsError                   controlplane.settings: a malformed setting       (exit 2)
    ├── StorageError                    controlplane.store: the database failed          (exit 1)
    ├── ServiceStorageError             daemon.store: the host service's database failed (exit 3)
    ├── SandboxNotFound                 no such sandbox for this tenant (404)            (exit 2)
    ├── TemplateNotFound                no such template for this tenant (404)           (exit 2)
    ├── CommandNotFound                 no such command in this sandbox (404)            (exit 2)
    ├── SandboxConflict                 the sandbox is not running (409)                 (exit 2)
    ├── TimeoutRefused                  a TTL over the template's maximum (400)          (exit 2)
    ├── FileRefused                     a path outside the tmpfs, a symlink, too large   (exit 2)
    ├── CellFileError                   runtime.docker.files: a path or size refused in
    │                                   a cell's tmpfs                                   (exit 2)
    ├── NoUpstream                      netsvc.upstream: no upstream resolver configured (exit 1)
    ├── UpstreamFailed                  netsvc.upstream: every upstream resolver failed  (exit 1)
    ├── QuotaExceeded                   the tenant's quota holds no more cells (429)     (exit 2)
    ├── PoolExhausted                   the pool has handed out its maximum (429)        (exit 2)
    ├── CellUnverified                  a sandbox's new cell failed verify (503)         (exit 1)
    ├── AuthenticationFailed            sdk: the host service refused the token (401)    (exit 2)
    ├── CommandTimeout                  sdk: a wait for a background command ran out     (exit 1)
    └── SandboxError                    sdk: the host service failed a request or
                                        answered what the client cannot read             (exit 1)

"Unreachable" is one family: whichever service is down, the message names it, says how to
start it, and the command exits 3, as for anything else this host lacks.

``SandboxNotFound`` to ``CellUnverified``, the sandbox API's errors, are declared twice
under one name and meaning: in ``daemon.contract``, raised by the service, and in ``sdk``,
raised by its client for the same status and reason on the other side of the wire (the SDK
may import only this module).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "AdmissionError",
    "BackendError",
    "CellConflict",
    "CellNotFound",
    "ControlPlaneUnavailable",
    "EngineUnavailable",
    "Error",
    "HostError",
    "ImageError",
    "ImageNotFound",
    "InvalidInput",
    "Location",
    "RegistryUnavailable",
    "SpecError",
    "TrustError",
    "Unreachable",
]


class Location(NamedTuple):
    """Where in a spec file a problem sits. Any part may be unknown. (A named tuple rather
    than a dataclass: the command line's thin path imports this module, and ``dataclasses``
    costs it ``inspect``.)"""

    file: str | None = None
    line: int | None = None
    column: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        place = self.file or "<input>"
        if self.line is not None:
            place += f":{self.line}"
            if self.column is not None:
                place += f":{self.column}"
        if self.field:
            place += f": {self.field}"
        return place


class Error(Exception):
    """Root of every agentcell error: what went wrong, where, and how to fix it."""

    exit_code: int = 1

    def __init__(self, what: str, *, where: Location | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.where = where
        self.fix = fix

    def diagnostics(self) -> str:
        """A multi-line explanation meant for a person at a terminal."""
        lines = [f"{self.where}: {self.what}" if self.where else self.what]
        if self.fix:
            lines.append(f"  fix: {self.fix}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.diagnostics()


class SpecError(Error):
    """A spec cannot be read, parsed or validated. ``problems`` lists every one found."""

    exit_code = 2

    def __init__(
        self,
        what: str,
        *,
        where: Location | None = None,
        fix: str | None = None,
        problems: tuple[SpecError, ...] = (),
    ) -> None:
        super().__init__(what, where=where, fix=fix)
        self.problems = problems

    def diagnostics(self) -> str:
        if not self.problems:
            return super().diagnostics()
        return "\n".join([self.what, *(p.diagnostics() for p in self.problems)])


class AdmissionError(Error):
    """Policy refused a spec. The findings that refused it are in ``diagnostics()``."""

    exit_code = 2


class InvalidInput(Error):
    """An argument or option cannot name anything (a malformed name, an unknown probe or
    rule). Bad input: exit 2."""

    exit_code = 2


class HostError(Error):
    """This host lacks something agentcell needs (a runtime, a tool, a kernel feature)."""

    exit_code = 3


class Unreachable(HostError):
    """A service agentcell needs (the engine, the control plane, a registry) does not answer.

    ``service`` names it for programs and tests; ``what`` says it for people.
    """

    service: str = "service"


class EngineUnavailable(Unreachable):
    """The Docker Engine cannot be reached (no socket, refused, lost mid-call)."""

    service = "engine"


class ControlPlaneUnavailable(Unreachable):
    """The control plane cannot be reached, or its CA bundle to verify it is missing."""

    service = "control plane"


class RegistryUnavailable(Unreachable):
    """An OCI registry cannot be reached or timed out, so an image can be neither pushed,
    resolved nor verified."""

    service = "registry"


class BackendError(Error):
    """The engine refused or failed an operation."""


class CellNotFound(BackendError):
    """No cell by that name exists (or the engine has no container, network or exec by it).

    A name that matches nothing is bad input, like a malformed one (the README's contract).
    """

    exit_code = 2


class CellConflict(BackendError):
    """A name is already taken by a container that agentcell does not own.

    Bad input rather than an engine failure: the spec must name another agent.
    """

    exit_code = 2


class ImageError(Error):
    """An image cannot be built, imported, pushed or found."""


class ImageNotFound(ImageError):
    """The engine holds no image by that reference (bad input: the spec names nothing)."""

    exit_code = 2


class TrustError(Error):
    """An image failed the trust checks that run before launch, or could not be checked.

    ``reason`` names the check for programs and tests; ``what`` says it for people.
    """

    exit_code = 2

    def __init__(
        self,
        what: str,
        *,
        reason: str,
        where: Location | None = None,
        fix: str | None = None,
    ) -> None:
        super().__init__(what, where=where, fix=fix)
        self.reason = reason
