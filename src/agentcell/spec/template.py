"""The ``agentcell/v1`` ``SandboxTemplate`` document: what a sandbox is made of.

A template names a tenant, the cell every sandbox of it runs in (the same body as an Agent's
``spec``, judged by the same policy), a one-shot warm pool (``min`` ready cells, at most
``max`` handed out and ready together) and the sandboxes' time to live (a default, and the
most a caller may ask for). Each sandbox becomes an Agent document named after the sandbox
(:meth:`TemplateSpecDocument.agent`), so it goes through the one launch path like any cell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import ConfigDict, Field, model_validator

from agentcell.cell.fields import FieldPath
from agentcell.errors import Location, SpecError
from agentcell.spec.load import (
    SPEC_SUFFIXES,
    TEMPLATE_KIND,
    SpecDocument,
    _Located,
    explain_validation_error,
    parse_yaml_documents,
    read_spec_file,
)
from agentcell.spec.model import AgentDocument, AgentSpec, DurationNs, Name, TenantName, _Model

__all__ = [
    "DEFAULT_TTL_S",
    "MAX_POOL",
    "TEMPLATE_KIND",
    "SandboxTemplate",
    "TemplateMetadata",
    "TemplatePool",
    "TemplateSpec",
    "TemplateSpecDocument",
    "TemplateTtl",
    "load_template_documents",
    "load_template_text",
    "load_templates",
]

DEFAULT_TTL_S = 300.0
MAX_POOL = 256
_NS = 10**9
_TTL_CEILING_NS = 7 * 24 * 3600 * _NS


class TemplateMetadata(_Model):
    """The template's name (unique within its tenant) and the tenant whose sandboxes it makes."""

    name: Name = Field(description="Template name; callers create sandboxes by it.")
    tenant: TenantName = Field(default="default", description="The tenant owning its sandboxes.")


class TemplatePool(_Model):
    """The one-shot warm pool: ``min`` cells started and verified before anyone asks; at most
    ``max`` cells handed out and ready together."""

    min: int = Field(default=0, ge=0, le=MAX_POOL, description="Ready cells kept waiting.")
    max: int = Field(default=16, ge=1, le=MAX_POOL, description="Handed out + ready, at most.")

    @model_validator(mode="after")
    def _min_within_max(self) -> TemplatePool:
        if self.min > self.max:
            raise ValueError(f"pool.min ({self.min}) is above pool.max ({self.max})")
        return self


class TemplateTtl(_Model):
    """How long a sandbox lives: ``default`` unless the caller asks, never over ``max``."""

    default: DurationNs = Field(
        default=int(DEFAULT_TTL_S * _NS), gt=0, le=_TTL_CEILING_NS, description="Default TTL."
    )
    max: DurationNs = Field(
        default=3600 * _NS, gt=0, le=_TTL_CEILING_NS, description="The longest TTL allowed."
    )

    @model_validator(mode="after")
    def _default_within_max(self) -> TemplateTtl:
        if self.default > self.max:
            raise ValueError(
                f"ttl.default ({self.default / _NS:g}s) is above ttl.max ({self.max / _NS:g}s)"
            )
        return self

    @property
    def default_s(self) -> float:
        """The default TTL in seconds."""
        return self.default / _NS

    @property
    def max_s(self) -> float:
        """The longest TTL in seconds."""
        return self.max / _NS


class TemplateSpec(_Model):
    """The cell, the pool and the TTLs."""

    cell: AgentSpec = Field(description="The cell each sandbox runs in: an Agent's spec.")
    pool: TemplatePool = Field(default_factory=TemplatePool, description="The warm pool.")
    ttl: TemplateTtl = Field(default_factory=TemplateTtl, description="Time to live.")


class SandboxTemplate(_Model):
    """One YAML document: ``apiVersion: agentcell/v1``, ``kind: SandboxTemplate``, metadata,
    spec."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="agentcell SandboxTemplate",
        json_schema_extra={"$id": "https://agentcell.dev/schema/agentcell-v1-sandboxtemplate.json"},
    )

    api_version: Literal["agentcell/v1"] = Field(alias="apiVersion")
    kind: Literal["SandboxTemplate"]
    metadata: TemplateMetadata
    spec: TemplateSpec

    @property
    def key(self) -> tuple[str, str]:
        """(tenant, name)."""
        return (self.metadata.tenant, self.metadata.name)


@dataclass(frozen=True, kw_only=True)
class TemplateSpecDocument(_Located):
    """A validated SandboxTemplate and where each of its fields was written."""

    document: SandboxTemplate

    @property
    def name(self) -> str:
        """The template's name."""
        return self.document.metadata.name

    @property
    def tenant(self) -> str:
        """The tenant owning its sandboxes."""
        return self.document.metadata.tenant

    def agent(self, name: str) -> SpecDocument:
        """The Agent document of one sandbox's cell, named ``name``, located in this template
        (a finding about ``spec.security.user`` names the line of ``spec.cell.security.user``).
        """
        document = AgentDocument.model_validate(
            {
                "apiVersion": "agentcell/v1",
                "kind": "Agent",
                "metadata": {"name": name, "tenant": self.tenant},
                "spec": self.document.spec.cell.model_dump(by_alias=True),
            }
        )
        return SpecDocument(
            document=document, file=self.file, line=self.line, field_lines=_agent_lines(self)
        )


def _agent_lines(template: TemplateSpecDocument) -> Mapping[FieldPath, int]:
    lines: dict[FieldPath, int] = {}
    for path, line in template.field_lines.items():
        if path[:2] == ("spec", "cell"):
            lines[("spec", *path[2:])] = line
        elif path[:1] == ("metadata",):
            lines[path] = line
    return lines


def load_template_text(text: str, *, file: str = "<input>") -> list[TemplateSpecDocument]:
    """Every SandboxTemplate document of one YAML text.

    Raises:
        SpecError: the text is not YAML, or a document is not a valid SandboxTemplate (every
            problem, each naming the file, line and field).
    """
    return load_template_documents(parse_yaml_documents(text, file), file=file)


def load_template_documents(
    documents: Iterable[tuple[Any, dict[FieldPath, int], int]], *, file: str
) -> list[TemplateSpecDocument]:
    """Validate parsed documents (:func:`~agentcell.spec.load.parse_yaml_documents`) as
    SandboxTemplates.

    Raises:
        SpecError: a document is not a valid SandboxTemplate (every problem).
    """
    found: list[TemplateSpecDocument] = []
    problems: list[SpecError] = []
    base_dir = str(Path(file).resolve().parent) if file != "<input>" else None
    for data, lines, start in documents:
        if data.get("kind") != TEMPLATE_KIND:
            problems.append(
                SpecError(
                    f"a {data.get('kind') or 'document without a kind'}: a templates directory "
                    f"holds {TEMPLATE_KIND} documents only",
                    where=Location(file=file, line=lines.get(("kind",), start), field="kind"),
                    fix=f"write kind: {TEMPLATE_KIND}, or move the document elsewhere",
                )
            )
            continue
        try:
            template = SandboxTemplate.model_validate(data, context={"base_dir": base_dir})
        except pydantic.ValidationError as exc:
            problems.extend(
                explain_validation_error(
                    error,
                    root=SandboxTemplate,
                    file=file,
                    lines=lines,
                    start=start,
                    reference="`agentcell schema --kind SandboxTemplate`",
                )
                for error in exc.errors()
            )
            continue
        found.append(
            TemplateSpecDocument(document=template, file=file, line=start, field_lines=lines)
        )
    if problems:
        raise _combined(problems)
    return found


def load_templates(paths: Iterable[str | Path]) -> list[TemplateSpecDocument]:
    """Every SandboxTemplate in files and directories (``*.yaml``/``*.yml`` directly in a
    directory). All problems of all files are collected before raising.

    Raises:
        SpecError: a file is unreadable or invalid, a directory holds no template, or two
            templates of a tenant share a name.
    """
    found: list[TemplateSpecDocument] = []
    problems: list[SpecError] = []
    for raw in paths:
        path = Path(raw)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in SPEC_SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        if path.is_dir() and not files:
            problems.append(
                SpecError(
                    f"no *.yaml or *.yml file in directory {path}",
                    where=Location(file=str(path)),
                    fix="write a SandboxTemplate document there, or point at another directory",
                )
            )
        for file in files:
            try:
                found.extend(load_template_text(read_spec_file(file), file=str(file)))
            except SpecError as exc:
                problems.extend(exc.problems or (exc,))
    first: dict[tuple[str, str], TemplateSpecDocument] = {}
    for template in found:
        earlier = first.setdefault(template.document.key, template)
        if earlier is not template:
            problems.append(
                SpecError(
                    f"template {template.tenant}/{template.name} is defined twice "
                    f"(first at {earlier.file}:{earlier.line})",
                    where=template.where("metadata", "name"),
                    fix="give each template of a tenant its own metadata.name",
                )
            )
    if problems:
        raise _combined(problems)
    return found


def _combined(problems: list[SpecError]) -> SpecError:
    if len(problems) == 1:
        return problems[0]
    return SpecError(f"{len(problems)} problems in the templates:", problems=tuple(problems))
