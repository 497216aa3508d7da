"""Errors of the identity layer, under agentcell's one root :class:`agentcell.errors.Error`.

::

    Error
    └── IdentityError             a CA, certificate, CSR or join token problem        (exit 1)
        ├── CANotInitialised      the control plane has no CA yet                     (exit 3)
        └── EnrolmentRefused      a join token or CSR was refused
"""

from __future__ import annotations

from agentcell.errors import Error

__all__ = ["CANotInitialised", "EnrolmentRefused", "IdentityError"]


class IdentityError(Error):
    """A CA, certificate, CSR or join token cannot be used as asked."""


class CANotInitialised(IdentityError):
    """The state directory holds no CA: ``agentcell ca init`` has not run."""

    exit_code = 3


class EnrolmentRefused(IdentityError):
    """A join token or certificate request was refused. ``reason`` is a short machine tag."""

    def __init__(self, what: str, *, reason: str, fix: str | None = None) -> None:
        super().__init__(what, fix=fix)
        self.reason = reason
