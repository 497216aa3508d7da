"""Talking to an OCI registry (distribution v2 API) through oras-py.

oras-py supplies the protocol pieces: URLs for manifests and blobs, blob upload (POST + PUT),
manifest push, and token/basic authentication with credentials from the Docker config. Three
things it does not do the way admission needs, and this module adds them:

- its ``do_request`` retries *any* failure five times with sleeps of 3 to 83 seconds, so a
  registry that is down would hold a launch for over two minutes. :class:`_Registry` uses the
  undecorated request function: one attempt, with a connect/read timeout, then a clear error;
- ``get_manifest`` returns parsed JSON and drops the ``Docker-Content-Digest`` header and the
  raw bytes, which are the digest. :meth:`RegistryClient.manifest` asks through oras's
  authenticated request and keeps both, checking the digest against the bytes;
- nothing bounds the size of what it downloads. Manifests and payloads are read with limits.

Plain HTTP is used only for registries on the loopback interface (as Docker itself allows);
every other registry is spoken to over verified HTTPS.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.container  # type: ignore[import-untyped]
import oras.provider  # type: ignore[import-untyped]
import requests
import requests.adapters

from agentcell.errors import RegistryUnavailable, TrustError
from agentcell.trust.cosign import DOCKER_MANIFEST_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, digest_of
from agentcell.trust.reference import Digest, ImageReference, is_loopback_host, parse_digest

__all__ = ["MANIFEST_MEDIA_TYPES", "Manifest", "Registries", "RegistryClient"]

MANIFEST_MEDIA_TYPES = (
    OCI_MANIFEST_MEDIA_TYPE,
    "application/vnd.oci.image.index.v1+json",
    DOCKER_MANIFEST_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """A manifest as the registry stored it: its exact bytes and their digest."""

    digest: Digest
    media_type: str
    raw: bytes | None
    """The bytes; None when only the digest was asked for (HEAD)."""


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    """Every request gets a timeout, since oras passes none and requests waits forever."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(pool_connections=1, pool_maxsize=4, max_retries=0)
        self.timeout_s = timeout_s

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)


class _Registry(oras.provider.Registry):  # type: ignore[misc]
    """oras's Registry, one attempt per request (see the module docstring)."""

    do_request = oras.provider.Registry.do_request.__wrapped__


class RegistryClient:
    """One registry host over one pooled connection; reuse it to keep the connection warm."""

    def __init__(self, host: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.host = host
        self.insecure = is_loopback_host(host)
        self._oras = _Registry(hostname=host, insecure=self.insecure, tls_verify=True)
        adapter = _TimeoutAdapter(timeout_s)
        self._oras.session.mount("http://", adapter)
        self._oras.session.mount("https://", adapter)
        # A proxy cannot reach this machine's loopback; never send loopback traffic to one.
        self._oras.session.trust_env = not self.insecure
        self._credentials_loaded = False

    def close(self) -> None:
        """Release the connection pool."""
        self._oras.session.close()

    # -- reading -------------------------------------------------------------------------------

    def resolve(self, reference: ImageReference) -> Digest:
        """The digest ``reference`` names now: its written digest, or its tag's current one.

        Raises:
            TrustError: the image is not in the registry, or the registry answered nonsense.
            RegistryUnavailable: the registry cannot be reached or timed out.
        """
        target = reference.digest or reference.effective_tag
        found = self.manifest(reference.repository, target, head=True)
        if found is None:
            raise TrustError(
                f"{reference} is not in registry {self.host}",
                reason="not-found",
                fix=f"push it first (`agentcell image push ... {self.host}`) or fix the tag",
            )
        if reference.digest is not None and found.digest != reference.digest:
            raise TrustError(
                f"registry {self.host} answered digest {found.digest} for {reference}",
                reason="digest-mismatch",
                fix="the registry is misbehaving; do not run this image",
            )
        return found.digest

    def manifest(
        self,
        repository: str,
        target: str,
        *,
        head: bool = False,
        accept: Sequence[str] = MANIFEST_MEDIA_TYPES,
    ) -> Manifest | None:
        """The manifest ``repository:target`` (a tag or a digest), or None when there is none.

        With ``head`` only the digest is fetched, unless the registry omits the digest header.

        Raises:
            TrustError: the registry refused or answered nonsense.
            RegistryUnavailable: the registry cannot be reached or timed out.
        """
        url = f"{self._prefix}://{self._container(repository, target).manifest_url()}"
        headers = {"Accept": ", ".join(accept)}
        response = self._request(url, "HEAD" if head else "GET", headers=headers)
        if response.status_code == 404:
            return None
        self._check(response, f"read manifest {repository}:{target}")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        header_digest = response.headers.get("Docker-Content-Digest")
        if head and header_digest:
            return Manifest(digest=parse_digest(header_digest), media_type=media_type, raw=None)
        if head:
            response = self._request(url, "GET", headers=headers)
            self._check(response, f"read manifest {repository}:{target}")
        raw = response.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise TrustError(
                f"manifest {repository}:{target} is {len(raw)} bytes; refusing to read it",
                reason="registry-error",
            )
        digest = digest_of(raw)
        if target.startswith("sha256:") and digest != target:
            raise TrustError(
                f"registry {self.host} returned a manifest for {target} whose digest is {digest}",
                reason="digest-mismatch",
                fix="the registry is misbehaving; do not trust its content",
            )
        return Manifest(digest=digest, media_type=media_type, raw=raw)

    def blob(self, repository: str, digest: Digest, *, max_bytes: int) -> bytes:
        """Blob ``digest`` of ``repository``, checked against its digest.

        Raises:
            TrustError: the blob is missing, too large or damaged.
            RegistryUnavailable: the registry cannot be reached or timed out.
        """
        url = f"{self._prefix}://{self._container(repository, digest).get_blob_url(digest)}"
        response = self._request(url, "GET", stream=True)
        with response:
            if response.status_code == 404:
                raise TrustError(
                    f"blob {digest} of {repository} is missing from registry {self.host}",
                    reason="malformed-signature",
                    fix="re-sign the image",
                )
            self._check(response, f"read blob {digest}")
            data = response.raw.read(max_bytes + 1, decode_content=True)
        if len(data) > max_bytes:
            raise TrustError(
                f"blob {digest} of {repository} is larger than {max_bytes} bytes",
                reason="malformed-signature",
            )
        if digest_of(data) != digest:
            raise TrustError(
                f"blob {digest} of {repository} does not match its digest",
                reason="digest-mismatch",
                fix="the registry storage is damaged or tampered with",
            )
        return data

    # -- writing -------------------------------------------------------------------------------

    def push_blob(self, repository: str, data: bytes, media_type: str) -> Digest:
        """Upload ``data`` unless the registry has it already; returns its digest.

        Raises:
            TrustError: the registry refused.
            RegistryUnavailable: the registry cannot be reached or timed out.
        """
        digest = digest_of(data)
        layer = {"mediaType": media_type, "digest": digest, "size": len(data)}
        container = self._container(repository, "latest")
        # oras uploads from a file; payloads are tiny, so a private temporary file is cheap.
        with _blob_file(data) as path:
            try:
                response = self._oras.upload_blob(str(path), container, layer)
            except ValueError as exc:  # oras: "Issue retrieving session url"
                raise TrustError(
                    f"registry {self.host} did not start a blob upload: {exc}",
                    reason="registry-error",
                ) from exc
            except requests.RequestException as exc:
                raise self._unreachable(exc) from exc
        self._check(response, f"upload blob {digest}")
        return digest

    def push_manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> Digest:
        """Store an OCI image manifest under ``tag``; returns the digest the registry gave it.

        Raises:
            TrustError: the registry refused.
            RegistryUnavailable: the registry cannot be reached or timed out.
        """
        container = self._container(repository, tag)
        try:
            response = self._oras.upload_manifest(manifest, container)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc
        self._check(response, f"push manifest {repository}:{tag}")
        return parse_digest(response.headers.get("Docker-Content-Digest", ""))

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def _prefix(self) -> str:
        return "http" if self.insecure else "https"

    def _container(self, repository: str, target: str) -> Any:
        """An oras Container for ``repository`` at ``target``, set field by field so that a
        repository whose first part holds a dot is never mistaken for a registry host."""
        container = oras.container.Container("placeholder", registry=self.host)
        namespace, _, name = repository.rpartition("/")
        container.namespace = namespace or None
        container.repository = name
        if target.startswith("sha256:"):
            container.digest, container.tag = target, None
        else:
            container.digest, container.tag = None, target
        if not self._credentials_loaded:
            # Credentials from ~/.docker/config.json, as `docker login` left them (if any).
            self._oras.auth.load_configs(container)
            self._credentials_loaded = True
        return container

    def _request(
        self, url: str, method: str, *, headers: dict[str, str] | None = None, stream: bool = False
    ) -> requests.Response:
        try:
            response: requests.Response = self._oras.do_request(
                url, method, headers=dict(headers or {}), stream=stream
            )
        except requests.RequestException as exc:
            raise self._unreachable(exc) from exc
        except ValueError as exc:  # oras: "Cannot respond to request for authentication."
            raise TrustError(
                f"registry {self.host} demands credentials agentcell does not have: {exc}",
                reason="registry-error",
                fix=f"log in first (`docker login {self.host}`)",
            ) from exc
        return response

    def _check(self, response: requests.Response, action: str) -> None:
        if response.status_code in (200, 201, 202):
            return
        detail = response.reason
        try:
            errors = response.json().get("errors") or []
            if errors and isinstance(errors[0], dict):
                detail = str(errors[0].get("message") or detail)
        except ValueError:
            pass
        raise TrustError(
            f"registry {self.host} refused to {action}: HTTP {response.status_code} {detail}",
            reason="registry-error",
            fix="check the registry's log and the image reference",
        )

    def _unreachable(self, exc: requests.RequestException) -> RegistryUnavailable:
        kind = "timed out" if isinstance(exc, requests.Timeout) else type(exc).__name__
        return RegistryUnavailable(
            f"cannot reach the registry at {self.host} ({kind}), so the image can be neither "
            "pushed, resolved nor verified",
            fix="start the registry (scripts/setup.sh starts the one on 127.0.0.1:5000) "
            "and try again",
        )


class Registries:
    """One :class:`RegistryClient` per registry host, kept open across calls."""

    def __init__(self, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[str, RegistryClient] = {}

    def client(self, host: str) -> RegistryClient:
        """The client for ``host``, created on first use."""
        client = self._clients.get(host)
        if client is None:
            client = self._clients[host] = RegistryClient(host, timeout_s=self.timeout_s)
        return client

    def close(self) -> None:
        """Close every connection."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Registries:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextmanager
def _blob_file(data: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="agentcell-blob-") as directory:
        path = Path(directory) / "blob"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        yield path
