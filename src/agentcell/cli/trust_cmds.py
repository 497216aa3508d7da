"""Commands for image trust: keys, minimal image builds, push, sign and verify.

Registered in :mod:`agentcell.cli.main` as ``agentcell keys generate`` and ``agentcell image
build|report|push|sign|verify``. Key passwords come from ``COSIGN_PASSWORD`` (cosign's own
variable) or, at a terminal, a prompt.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from agentcell.cli.options import JsonAlias, OutputOption
from agentcell.cli.output import print_json, wants_json
from agentcell.errors import Error, TrustError

if TYPE_CHECKING:
    from agentcell.runtime.docker.minimal import Capability, ImageReport
    from agentcell.trust.reference import ImageReference

__all__ = [
    "image_build",
    "image_push",
    "image_report",
    "image_sign",
    "image_verify",
    "keys_generate",
]


def keys_generate(
    output_prefix: Annotated[
        Path, typer.Option(help="Write PREFIX.key and PREFIX.pub (like cosign).")
    ] = Path("cosign"),
    key_format: Annotated[
        Literal["cosign", "pkcs8"],
        typer.Option(
            "--key-format",
            help="cosign: ENCRYPTED SIGSTORE PRIVATE KEY (cosign reads it); "
            "pkcs8: a password-protected PKCS#8 PEM.",
        ),
    ] = "cosign",
    force: Annotated[bool, typer.Option(help="Overwrite existing key files.")] = False,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Generate an ECDSA P-256 key pair for signing images (cosign-compatible)."""
    from agentcell.trust.keys import encode_private_key, generate_key_pair

    private_path = output_prefix.with_name(output_prefix.name + ".key")
    public_path = output_prefix.with_name(output_prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise Error(f"{path} exists; not overwriting it", fix="pass --force or another prefix")
    password = _password(confirm=True)
    key = generate_key_pair(name=output_prefix.name)
    _write(private_path, encode_private_key(key, password, key_format=key_format), mode=0o600)
    _write(public_path, key.public.pem(), mode=0o644)
    if wants_json(output, json_alias):
        print_json(
            "KeyPair",
            [
                {
                    "private_key": str(private_path),
                    "public_key": str(public_path),
                    "format": key_format,
                    "fingerprint": key.public.fingerprint,
                }
            ],
        )
        return
    print(f"private key: {private_path} ({key_format}, mode 0600)")
    print(f"public key:  {public_path} ({key.public.fingerprint})")


def image_build(
    name: Annotated[
        str,
        typer.Argument(help="Image to build: 'python-runtime' (built in) or a repo:tag."),
    ],
    context: Annotated[
        Path | None, typer.Option(help="Folder with the Dockerfile (not for python-runtime).")
    ] = None,
    base: Annotated[
        str | None, typer.Option(help="BASE build argument (default: the offline base image).")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(help="Let the image hold a 'shell', 'package-manager' or 'compiler'."),
    ] = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Build a minimal image offline and report its size and what it contains."""
    from agentcell.cli.names import InvalidInput
    from agentcell.runtime.docker.client import connect
    from agentcell.runtime.docker.images import BASE_IMAGE
    from agentcell.runtime.docker.minimal import BUILTIN, build, build_python_runtime
    from agentcell.trust.reference import ImageReference

    client = connect()
    if name in BUILTIN and context is None:
        result = build_python_runtime(client, base=base or BASE_IMAGE, progress=_err)
    elif context is None:
        raise InvalidInput(
            f"NAME {name!r}: give --context for an image that is not built in",
            fix=f"built in: {', '.join(BUILTIN)}",
        )
    else:
        reference = name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"
        ImageReference.parse(reference)
        result = build(
            client,
            reference,
            context,
            base=base or BASE_IMAGE,
            allow=_capabilities(allow or []),
            progress=_err,
        )
    _print_report(result, wants_json(output, json_alias))


def image_report(
    reference: Annotated[str, typer.Argument(help="A local image.")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Report an image's size, file count, programs, and any shell/package manager/compiler."""
    from agentcell.runtime.docker.client import connect
    from agentcell.runtime.docker.minimal import report
    from agentcell.trust.reference import ImageReference

    ImageReference.parse(reference)  # a malformed name is bad input, before the engine
    _print_report(report(connect(), reference), wants_json(output, json_alias))


def image_push(
    source: Annotated[str, typer.Argument(help="Local image, e.g. agentcell/monitor-agent:0.1.0.")],
    to: Annotated[
        str | None,
        typer.Option(help="Registry reference to push as (default: 127.0.0.1:5000/SOURCE)."),
    ] = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Push a local image to the registry and print the digest to pin it by."""
    from agentcell.runtime.docker.client import connect
    from agentcell.runtime.docker.registry import push
    from agentcell.trust.reference import ImageReference

    target = to
    parsed = ImageReference.parse(source)
    if target is None:
        target = source if not parsed.is_local else f"127.0.0.1:5000/{source}"
    ImageReference.parse(target)
    pushed = push(connect(), source, target)
    if wants_json(output, json_alias):
        print_json(
            "PushResult",
            [
                {
                    "source": source,
                    "reference": pushed.reference,
                    "digest": pushed.digest,
                    "reference_by_digest": pushed.reference_by_digest,
                }
            ],
        )
        return
    print(f"pushed {pushed.reference}")
    print(f"digest {pushed.digest}")
    print(f"pin as {pushed.reference_by_digest}")


def image_sign(
    reference: Annotated[str, typer.Argument(help="Registry image, by tag or digest.")],
    key: Annotated[Path, typer.Option(help="Private key (cosign.key or PKCS#8 PEM).")],
    annotation: Annotated[
        list[str] | None,
        typer.Option("-a", "--annotation", help="KEY=VALUE into the payload's 'optional'."),
    ] = None,
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Sign a registry image with a key pair, storing the signature as cosign does."""
    from agentcell.cli.names import InvalidInput
    from agentcell.trust.keys import read_private_key
    from agentcell.trust.registry import RegistryClient
    from agentcell.trust.signing import sign_image

    parsed = _registry_reference(reference)
    annotations = {}
    for item in annotation or []:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise InvalidInput(f"--annotation {item!r} is not KEY=VALUE", fix="e.g. -a team=sre")
        annotations[name] = value
    signing_key = read_private_key(key, _password(confirm=False, only_if_needed=key))
    assert parsed.registry is not None
    client = RegistryClient(parsed.registry)
    try:
        signed = sign_image(client, parsed, signing_key, annotations=annotations or None)
    finally:
        client.close()
    if wants_json(output, json_alias):
        print_json(
            "SignResult",
            [
                {
                    "reference": signed.reference,
                    "digest": signed.digest,
                    "key": signed.key.name,
                    "key_fingerprint": signed.key.fingerprint,
                    "signature_reference": signed.signature_reference,
                    "signatures_in_manifest": signed.signatures_in_manifest,
                }
            ],
        )
        return
    print(f"signed    {signed.reference}")
    print(f"key       {signed.key.describe()}")
    print(f"stored at {signed.signature_reference} ({signed.signatures_in_manifest} signature(s))")


def image_verify(
    reference: Annotated[str, typer.Argument(help="Registry image, by tag or digest.")],
    key: Annotated[list[Path], typer.Option(help="Trusted public key (repeatable).")],
    output: OutputOption = "text",
    json_alias: JsonAlias = False,
) -> None:
    """Verify that a trusted key signed the image a reference names now."""
    from agentcell.trust.keys import read_public_key
    from agentcell.trust.registry import RegistryClient
    from agentcell.trust.signing import verify_image

    parsed = _registry_reference(reference)
    keys = [read_public_key(path) for path in key]
    assert parsed.registry is not None
    client = RegistryClient(parsed.registry)
    try:
        verified = verify_image(client, parsed, keys)
    finally:
        client.close()
    if wants_json(output, json_alias):
        print_json(
            "SignatureVerification",
            [
                {
                    "reference": parsed.by_digest(verified.digest),
                    "digest": verified.digest,
                    "key": verified.key.name,
                    "key_fingerprint": verified.key.fingerprint,
                    "payload": verified.payload.model_dump(mode="json", by_alias=True),
                }
            ],
        )
        return
    print(f"verified  {parsed.by_digest(verified.digest)}")
    print(f"signed by {verified.key.describe()}")
    from agentcell.cli.terminal import printable

    # The payload is the signer's text.
    print(printable(f"payload   docker-reference={verified.payload.docker_reference}"))


def _registry_reference(text: str) -> ImageReference:
    from agentcell.trust.reference import ImageReference

    parsed = ImageReference.parse(text)
    if parsed.is_local:
        raise TrustError(
            f"{text} names no registry; signatures live in a registry",
            reason="local-unsigned",
            fix=f"push it first: agentcell image push {text}",
        )
    return parsed


def _password(*, confirm: bool, only_if_needed: Path | None = None) -> bytes:
    """The key password: COSIGN_PASSWORD, else a prompt at a terminal."""
    from agentcell.trust.keys import PASSWORD_ENV, password_from_env

    from_env = password_from_env()
    if from_env is not None:
        return from_env
    if only_if_needed is not None and not _is_encrypted(only_if_needed):
        return b""
    if not sys.stdin.isatty():
        raise Error(
            f"no key password: {PASSWORD_ENV} is not set and there is no terminal to ask at",
            fix=f"set {PASSWORD_ENV} (empty is allowed, as with cosign)",
        )
    text: str = typer.prompt("key password", hide_input=True, confirmation_prompt=confirm)
    return text.encode()


def _is_encrypted(path: Path) -> bool:
    try:
        head = path.read_bytes()[:64]
    except OSError:
        return True  # reading it again reports the real problem
    return b"ENCRYPTED" in head


def _write(path: Path, data: bytes, *, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(path, mode)
    except OSError as exc:
        raise Error(f"cannot write {path}: {exc.strerror}", fix="check the directory") from exc


def _print_report(result: ImageReport, json_out: bool) -> None:
    if json_out:
        item: dict[str, Any] = {
            "reference": result.reference,
            "image_id": result.image_id,
            "size_bytes": result.size_bytes,
            "file_count": result.file_count,
            "symlink_count": result.symlink_count,
            "programs": list(result.programs),
            "found": {kind: list(names) for kind, names in result.found.items()},
            "allowed": sorted(result.allowed),
        }
        print_json("ImageReport", [item])
        return
    found = result.found
    kinds: tuple[Capability, ...] = ("shell", "package-manager", "compiler")
    print(f"image     {result.reference} ({result.image_id[:19]})")
    print(f"size      {result.size_bytes / 2**20:.1f} MiB, {result.file_count} files")
    from agentcell.cli.terminal import printable

    # Program names are file names in the image, which its author chose.
    print(printable(f"programs  {len(result.programs)}: {' '.join(result.programs[:12])}"))
    for kind in kinds:
        names = found.get(kind, ())
        state = ", ".join(names) if names else "none"
        if names and kind in result.allowed:
            state += " (allowed)"
        print(printable(f"{kind:16}{state}"))


def _capabilities(values: list[str]) -> tuple[Capability, ...]:
    known: dict[str, Capability] = {
        "shell": "shell",
        "package-manager": "package-manager",
        "compiler": "compiler",
    }
    unknown = [value for value in values if value not in known]
    if unknown:
        from agentcell.cli.names import InvalidInput

        raise InvalidInput(
            f"--allow {', '.join(map(repr, unknown))}: not a capability",
            fix=f"--allow takes {', '.join(known)}",
        )
    return tuple(known[value] for value in values)


def _err(message: str) -> None:
    sys.stderr.write(message.rstrip("\n") + "\n")
