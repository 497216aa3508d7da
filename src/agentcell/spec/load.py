"""Reading spec files: YAML in, validated :class:`SpecDocument` values out.

Every problem becomes a :class:`~agentcell.errors.SpecError` that names the file, the line and
the field, and says what to do. All problems of all documents are collected before raising, so
a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import functools
import sys
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydantic
import yaml
from pydantic_core import ErrorDetails

from agentcell.cell.fields import FieldPath, dotted
from agentcell.errors import Location, SpecError
from agentcell.spec.model import TENANT_NETWORK_ERROR, TENANT_NETWORK_FIX, AgentDocument
from agentcell.spec.tenant import TenantDocument

if TYPE_CHECKING:
    from agentcell.spec.template import TemplateSpecDocument

TEMPLATE_KIND = "SandboxTemplate"

__all__ = [
    "FieldPath",
    "SpecBundle",
    "SpecDocument",
    "TenantSpecDocument",
    "dotted",
    "explain_validation_error",
    "load_bundle",
    "load_paths",
    "load_text",
    "locate",
    "parse_yaml_documents",
    "read_spec_file",
]


# libyaml's parser when PyYAML was built with it (Debian's and the wheels are): several times
# faster, with the same nodes and marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Specs are small. These bounds stop hostile input (alias bombs, deep nesting, huge files)
# before it costs memory or time.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 20_000
SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, kw_only=True)
class _Located:
    """Where a document was written: its file, first line, and the line of each field."""

    file: str
    line: int
    field_lines: Mapping[FieldPath, int] = field(default_factory=dict, repr=False, compare=False)

    def where(self, *path: str | int) -> Location:
        """The location of ``path`` (e.g. ``"spec", "security", "user"``), or of its nearest
        written ancestor when the field was left at its default."""
        return locate(path, file=self.file, lines=self.field_lines, start=self.line)


@dataclass(frozen=True, kw_only=True)
class SpecDocument(_Located):
    """A validated Agent document and where each of its fields was written."""

    document: AgentDocument

    @property
    def name(self) -> str:
        """The agent's name."""
        return self.document.metadata.name

    @property
    def tenant(self) -> str:
        """The tenant that owns the agent."""
        return self.document.metadata.tenant


@dataclass(frozen=True, kw_only=True)
class TenantSpecDocument(_Located):
    """A validated Tenant document and where each of its fields was written."""

    document: TenantDocument

    @property
    def name(self) -> str:
        """The tenant's name."""
        return self.document.metadata.name


@dataclass(frozen=True, kw_only=True)
class SpecBundle:
    """Every document of a set of files: the tenants and the agents they declare."""

    tenants: tuple[TenantSpecDocument, ...]
    agents: tuple[SpecDocument, ...]
    templates: tuple[TemplateSpecDocument, ...] = ()
    """SandboxTemplate documents (the host service reads them; ``lint`` judges their cells)."""


def locate(path: FieldPath, *, file: str, lines: Mapping[FieldPath, int], start: int) -> Location:
    """Where ``path`` was written, or its nearest written ancestor, or the document start."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return Location(file=file, line=line, field=dotted(path))
    return Location(file=file, line=start, field=dotted(path) or None)


def load_paths(paths: Iterable[str | Path]) -> list[SpecDocument]:
    """Load every Agent document from files and directories (``*.yaml``/``*.yml``,
    recursively). Tenant documents are refused here: ``agentcell apply`` reads them.

    Raises:
        SpecError: any file is unreadable or invalid, or two documents name the same agent.
    """
    return list(_load(paths, tenants_allowed=False).agents)


def load_bundle(paths: Iterable[str | Path]) -> SpecBundle:
    """Load every Tenant, Agent and SandboxTemplate document from files and directories.

    Raises:
        SpecError: any file is unreadable or invalid, or two documents name the same tenant
            or the same agent of a tenant.
    """
    return _load(paths, tenants_allowed=True)


def _load(paths: Iterable[str | Path], *, tenants_allowed: bool) -> SpecBundle:
    agents: list[SpecDocument] = []
    tenants: list[TenantSpecDocument] = []
    templates: list[TemplateSpecDocument] = []
    problems: list[SpecError] = []
    for file in _expand(paths, problems):
        try:
            if file == STDIN:
                # Errors name <stdin>; relative paths in it are the working directory's.
                text, name = _read_stdin(), STDIN_NAME
            else:
                text, name = read_spec_file(file), str(file)
            bundle = _load_text(text, name, tenants_allowed=tenants_allowed)
        except SpecError as exc:
            problems.extend(exc.problems or (exc,))
            continue
        agents.extend(bundle.agents)
        tenants.extend(bundle.tenants)
        templates.extend(bundle.templates)
    problems.extend(_collisions(agents))
    problems.extend(_tenant_collisions(tenants))
    if problems:
        raise _combined(problems)
    return SpecBundle(tenants=tuple(tenants), agents=tuple(agents), templates=tuple(templates))


def load_text(text: str, *, file: str = "<input>") -> list[SpecDocument]:
    """Load every Agent document in one YAML text.

    Raises:
        SpecError: the text is not YAML, or a document is not a valid Agent.
    """
    return list(_load_text(text, file, tenants_allowed=False).agents)


def _load_text(text: str, file: str, *, tenants_allowed: bool) -> SpecBundle:
    agents: list[SpecDocument] = []
    tenants: list[TenantSpecDocument] = []
    templates: list[TemplateSpecDocument] = []
    problems: list[SpecError] = []
    if file == STDIN_NAME:
        base_dir: str | None = str(Path.cwd())
    else:
        base_dir = str(Path(file).resolve().parent) if file != "<input>" else None
    for data, lines, start in parse_yaml_documents(text, file):
        if data.get("kind") == TEMPLATE_KIND:
            if not tenants_allowed:
                problems.append(
                    SpecError(
                        f"a {TEMPLATE_KIND} document: this command takes Agent documents only",
                        where=Location(file=file, line=lines.get(("kind",), start), field="kind"),
                        fix="put sandbox templates in the host service's --templates directory",
                    )
                )
                continue
            from agentcell.spec.template import load_template_documents

            try:
                templates.extend(load_template_documents([(data, lines, start)], file=file))
            except SpecError as exc:
                problems.extend(exc.problems or (exc,))
            continue
        is_tenant = isinstance(data, dict) and data.get("kind") == "Tenant"
        if is_tenant and not tenants_allowed:
            problems.append(
                SpecError(
                    "a Tenant document: this command takes Agent documents only",
                    where=Location(file=file, line=lines.get(("kind",), start), field="kind"),
                    fix="apply tenants with `agentcell apply -f FILE`",
                )
            )
            continue
        root: type[AgentDocument] | type[TenantDocument] = (
            TenantDocument if is_tenant else AgentDocument
        )
        try:
            document = root.model_validate(data, context={"base_dir": base_dir})
        except pydantic.ValidationError as exc:
            problems.extend(
                explain_validation_error(error, root=root, file=file, lines=lines, start=start)
                for error in exc.errors()
            )
            continue
        if isinstance(document, TenantDocument):
            tenants.append(
                TenantSpecDocument(document=document, file=file, line=start, field_lines=lines)
            )
        else:
            agents.append(SpecDocument(document=document, file=file, line=start, field_lines=lines))
    if not agents and not tenants and not templates and not problems:
        problems.append(
            SpecError(
                "the file holds no document",
                where=Location(file=file, line=1),
                fix="write an Agent document: apiVersion, kind, metadata, spec",
            )
        )
    problems.extend(_collisions(agents))
    problems.extend(_tenant_collisions(tenants))
    if problems:
        raise _combined(problems)
    return SpecBundle(tenants=tuple(tenants), agents=tuple(agents), templates=tuple(templates))


def _expand(paths: Iterable[str | Path], problems: list[SpecError]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path == STDIN:
            yield path
            continue
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())
            if not found:
                problems.append(
                    SpecError(
                        f"no *.yaml or *.yml file in directory {path}",
                        where=Location(file=str(path)),
                        fix="point at a spec file or a directory that holds some",
                    )
                )
            yield from found
        else:
            yield path


STDIN = Path("-")
"""A path of ``-`` reads the documents from standard input."""
STDIN_NAME = "<stdin>"


def _read_stdin() -> str:
    raw = sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
    return _spec_text(raw, Location(file=STDIN_NAME), what="standard input", fix="send UTF-8 text")


def _spec_text(raw: bytes, where: Location, *, what: str, fix: str) -> str:
    """``raw`` (read up to one byte past the bound) as text, refused when too large or not
    UTF-8."""
    if len(raw) > MAX_FILE_BYTES:
        raise SpecError(
            f"{what} is larger than {MAX_FILE_BYTES // 1024} KiB; specs are small",
            where=where,
            fix="split it into several files",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"{what} is not UTF-8 text (bad byte at offset {exc.start})",
            where=where,
            fix=fix,
        ) from exc


def read_spec_file(file: Path) -> str:
    where = Location(file=str(file))
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise SpecError("file not found", where=where, fix="check the path") from exc
    except PermissionError as exc:
        raise SpecError(
            "file is not readable (permission denied)",
            where=where,
            fix="make it readable by this user",
        ) from exc
    except IsADirectoryError as exc:  # a directory listed after glob expansion
        raise SpecError("is a directory", where=where, fix="name a file") from exc
    except OSError as exc:
        raise SpecError(f"cannot read file: {exc.strerror}", where=where) from exc
    return _spec_text(raw, where, what="file", fix="save it as UTF-8")


def parse_yaml_documents(text: str, file: str) -> Iterator[tuple[Any, dict[FieldPath, int], int]]:
    """Yield (data, field lines, first line) for each non-empty document of ``text``."""
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters up front
        raise SpecError(
            f"not YAML text: {exc}",
            where=Location(file=file),
            fix="a spec is UTF-8 text without control characters",
        ) from exc
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            _record_lines(node, (), lines, file, budget=[MAX_NODES])
            data = loader.construct_document(node)
            start = node.start_mark.line + 1
            if data is None:
                continue
            if not isinstance(data, dict):
                raise SpecError(
                    f"a document must be a mapping, not {type(data).__name__}",
                    where=Location(file=file, line=start),
                    fix="start the document with 'apiVersion: agentcell/v1'",
                )
            yield data, lines, start
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError(
            f"invalid YAML: {exc.problem or exc.context}",
            where=Location(
                file=file,
                line=mark.line + 1 if mark else None,
                column=mark.column + 1 if mark else None,
            ),
            fix="fix the YAML syntax at that line (indentation, quotes, colons)",
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", where=Location(file=file)) from exc
    except RecursionError as exc:
        raise SpecError(
            "YAML nested too deeply", where=Location(file=file), fix="flatten the document"
        ) from exc
    finally:
        loader.dispose()


def _record_lines(
    node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], file: str, budget: list[int]
) -> None:
    """Map each field path to the line where it is written, refusing duplicate keys and
    documents whose aliases expand past ``MAX_NODES`` nodes."""
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(
            f"document expands to more than {MAX_NODES} YAML nodes",
            where=Location(file=file, line=node.start_mark.line + 1),
            fix="remove anchors/aliases that multiply content; specs are small",
        )
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise SpecError(
                    f"key {key!r} appears twice in one mapping (first at line {seen[key]})",
                    where=Location(file=file, line=line, field=dotted((*path, key))),
                    fix="keep one of them; YAML would silently drop the first",
                )
            seen[key] = line
            lines[(*path, key)] = line
            _record_lines(value_node, (*path, key), lines, file, budget)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _record_lines(item, (*path, index), lines, file, budget)


def explain_validation_error(
    error: ErrorDetails,
    *,
    root: type[pydantic.BaseModel],
    file: str,
    lines: Mapping[FieldPath, int],
    start: int,
    reference: str = "`agentcell schema`",
) -> SpecError:
    """One pydantic error as a :class:`SpecError` naming file, line and field, with a fix.

    ``root`` is the model that validated the document (its fields name the allowed keys);
    ``reference`` is where a user finds the format. Shared by every YAML file agentcell reads.
    """
    field_names = _field_names(root)
    loc = tuple(error["loc"])
    # Pydantic adds union member tags to locations; keep only what a user wrote or could write.
    kept: list[str | int] = []
    for part in loc:
        if isinstance(part, int) or part in field_names or (*kept, part) in lines:
            kept.append(part)
    path = tuple(kept)
    where = locate(path, file=file, lines=lines, start=start)
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "missing":
        name = path[-1] if path else "?"
        parent = dotted(path[:-1]) or "the document"
        return SpecError(
            f"required field {name!r} is missing",
            where=where,
            fix=f"add '{name}:' under {parent}",
        )
    if kind == TENANT_NETWORK_ERROR:
        return SpecError(message, where=where, fix=TENANT_NETWORK_FIX)
    if kind == "extra_forbidden":
        name = str(path[-1]) if path else "?"
        allowed = _allowed_fields(root, path[:-1])
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return SpecError(
            f"unknown field {name!r}",
            where=where,
            fix=f"{hint}fields allowed here: {', '.join(allowed)}",
        )
    if kind in ("model_type", "dict_type") and error.get("input") is None:
        return SpecError(
            f"{dotted(path) or 'the document'} is empty",
            where=where,
            fix=f"write its fields under it (see {reference})",
        )
    if kind == "string_type" and isinstance(error.get("input"), int | float | bool):
        return SpecError(
            f"wrong value {_short(error.get('input'))}: a string is expected",
            where=where,
            fix=f"quote it: '{error.get('input')}' (YAML reads bare numbers and yes/no as such)",
        )
    if kind.endswith(("_type", "_parsing")) or kind in ("literal_error", "enum"):
        return SpecError(
            f"wrong value {_short(error.get('input'))}: {message}",
            where=where,
            fix=f"see {reference} for the accepted values of this field",
        )
    if kind.startswith(("greater_than", "less_than", "too_short", "too_long")):
        return SpecError(
            f"value {_short(error.get('input'))} is out of range: {message}",
            where=where,
            fix="choose a value within the stated bounds",
        )
    if kind == "string_pattern_mismatch":
        return SpecError(
            f"value {_short(error.get('input'))} has the wrong form: {message}",
            where=where,
            fix="names are lowercase DNS labels (a-z, 0-9, '-'); paths are absolute",
        )
    return SpecError(message, where=where, fix=f"see {reference} for this field")


def _collisions(documents: Sequence[SpecDocument]) -> list[SpecError]:
    first: dict[tuple[str, str], SpecDocument] = {}
    problems = []
    for doc in documents:
        earlier = first.setdefault(doc.document.key, doc)
        if earlier is not doc:
            problems.append(
                SpecError(
                    f"agent {doc.tenant}/{doc.name} is defined twice "
                    f"(first at {earlier.file}:{earlier.line})",
                    where=doc.where("metadata", "name"),
                    fix="give each agent of a tenant its own metadata.name",
                )
            )
    return problems


def _tenant_collisions(documents: Sequence[TenantSpecDocument]) -> list[SpecError]:
    first: dict[str, TenantSpecDocument] = {}
    problems = []
    for doc in documents:
        earlier = first.setdefault(doc.name, doc)
        if earlier is not doc:
            problems.append(
                SpecError(
                    f"tenant {doc.name} is defined twice (first at {earlier.file}:{earlier.line})",
                    where=doc.where("metadata", "name"),
                    fix="declare each tenant once",
                )
            )
    return problems


def _combined(problems: list[SpecError]) -> SpecError:
    if len(problems) == 1:
        return problems[0]
    return SpecError(f"{len(problems)} problems in the spec:", problems=tuple(problems))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_fields(model: type[pydantic.BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _nested_model(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The model class inside an annotation such as ``tuple[X, ...]`` or ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _allowed_fields(root: type[pydantic.BaseModel], path: FieldPath) -> list[str]:
    """Field names allowed in the mapping at ``path`` under ``root``."""
    model: type[pydantic.BaseModel] | None = root
    keyed = False  # the previous field was a mapping: this part is one of its keys
    for part in path:
        if model is None or isinstance(part, int) or keyed:
            keyed = False
            continue
        info = next(
            (i for n, i in model.model_fields.items() if (i.alias or n) == part),
            None,
        )
        model = _nested_model(info.annotation) if info is not None else None
        keyed = info is not None and _is_mapping(info.annotation)
    return _model_fields(model) if model is not None else []


def _is_mapping(annotation: Any) -> bool:
    """Whether the annotation is a dict (or a dict among union members)."""
    origin = typing.get_origin(annotation)
    if origin is dict:
        return True
    return any(_is_mapping(arg) for arg in typing.get_args(annotation))


@functools.cache
def _field_names(root: type[pydantic.BaseModel]) -> frozenset[str]:
    """Every field name under ``root``: pydantic adds union member tags to error locations,
    and only names a user wrote or could write belong in a path."""
    return frozenset(_all_field_names(root, set()))


def _all_field_names(model: type[pydantic.BaseModel], into: set[str]) -> set[str]:
    for name, info in model.model_fields.items():
        into.add(info.alias or name)
        nested = _nested_model(info.annotation)
        if nested is not None and nested is not model:
            _all_field_names(nested, into)
    return into
