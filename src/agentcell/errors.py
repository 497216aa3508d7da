"""The one error tree of agentcell.

Every failure a user can act on is an :class:`Error` carrying *what* went wrong, *where*
(file, line and field when they are known) and *how to fix it*. Third-party and OS errors are
translated into this tree once, at the boundary where they enter, with ``raise ... from exc``.
The CLI catches only :class:`Error`.

::

    Error
    ├── SpecError                 a spec file cannot be read, parsed or validated      (exit 2)
    ├── AdmissionError            policy refused a spec; carries every finding          (exit 2)
    ├── HostError                 this host lacks something (engine, runtime, tool)     (exit 3)
    │   └── EngineUnavailable     the container engine cannot be reached
    ├── BackendError              the engine refused or failed an operation              (exit 1)
    │   ├── CellNotFound          no cell by that name
    │   └── CellConflict          a name is taken by something agentcell does not own (exit 2)
    ├── ImageError                an image cannot be built or found                     (exit 1)
    └── TrustError                an image is unsigned, wrongly signed, tampered with,
                                  or its registry cannot be asked                       (exit 2)
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AdmissionError",
    "BackendError",
    "CellConflict",
    "CellNotFound",
    "EngineUnavailable",
    "Error",
    "HostError",
    "ImageError",
    "Location",
    "SpecError",
    "TrustError",
]


@dataclass(frozen=True, kw_only=True)
class Location:
    """Where in a spec file a problem sits. Any part may be unknown."""

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


class HostError(Error):
    """This host lacks something agentcell needs (a runtime, a tool, a kernel feature)."""

    exit_code = 3


class EngineUnavailable(HostError):
    """The container engine cannot be reached."""


class BackendError(Error):
    """The engine refused or failed an operation."""


class CellNotFound(BackendError):
    """No cell by that name exists."""


class CellConflict(BackendError):
    """A name is already taken by a container that agentcell does not own.

    Bad input rather than an engine failure: the spec must name another agent.
    """

    exit_code = 2


class ImageError(Error):
    """An image cannot be built, imported or found."""


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
