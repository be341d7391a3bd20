"""Workflow files: reading, parsing and discovering the YAML files in ``workflows/``.

What a workflow may say is the typed model of :mod:`store.definitions` (one pydantic
definition, which also gives ``vc flow schema``); this module turns a file into the data that
model validates, and treats the file as hostile input on the way. The rules, and why:

- A file is refused before parsing when it is over 1 MiB, is not UTF-8, or holds a NUL or other
  control character: nothing legitimate needs them, and each would otherwise surface later as a
  confusing YAML, database or subprocess error.
- YAML is only *composed* (SafeLoader, libyaml when available); values are built here from the
  node graph, so no tag can construct an object and every value keeps its line. Aliases are
  followed while counting nodes, and the walk stops past :data:`MAX_NODES`, so an alias bomb
  ("billion laughs") costs a few milliseconds instead of all the memory of the machine.
- A scalar reaches the model as :class:`~store.definitions.YamlScalar`: its text as written
  and the value YAML gives it, so text fields read what was written and number fields what
  YAML typed. ``null`` (or an empty value) means "not set"; merge keys (``<<: *base``) are
  supported so stages can share settings; duplicate keys are errors, not "last one wins".
- Every problem is one :class:`WorkflowError` whose text is a single line
  ``path:line: key.path: problem`` (list indexes in the key path are 0-based, like JSON paths),
  with user-written text escaped so that it can be printed on a terminal as is.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from store.definition_base import (
    DEFAULT_KILL_TIMEOUT,
    MAX_RETRIES,
    MAX_SECONDS,
    Loc,
    YamlScalar,
    render_key,
    validate,
)
from store.definitions import StageDefinition, WorkflowDefinition
from store.errors import WorkflowError
from store.names import short_repr, validate_identifier
from store.param_definitions import ParamDefinition
from store.text import clean_text, listed, suggest

__all__ = [
    "DEFAULT_KILL_TIMEOUT",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_RETRIES",
    "MAX_SECONDS",
    "ParamDefinition",
    "StageDefinition",
    "WorkflowDefinition",
    "WorkflowError",
    "discover_workflows",
    "find_workflow",
    "load_workflow_file",
    "load_workflow_text",
    "validate_identifier",
]

MAX_FILE_BYTES = 1024 * 1024
"""Workflow files (and texts) larger than this are refused without being parsed."""
MAX_NODES = 100_000
"""Most YAML nodes one definition may expand to, aliases followed: the alias-bomb fuse."""
MAX_DEPTH = 64
"""Deepest nesting accepted; a workflow needs about five levels."""
WORKFLOW_SUFFIXES = (".yaml", ".yml")

# Everything YAML 1.1 forbids in a stream (PyYAML's Reader rejects the same set); checked
# up front so the error can name the line and the character, for every loader.
_NOT_YAML_TEXT = re.compile("[^\t\n\r\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

#: Plain scalars YAML 1.1 leaves as text but any reader takes for a number (``1e-3``).
_EXPONENT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")
_TAG = "tag:yaml.org,2002:"
_STR, _INT, _FLOAT, _BOOL, _NULL = (_TAG + t for t in ("str", "int", "float", "bool", "null"))
_TIMESTAMP, _MERGE, _MAP, _SEQ = (_TAG + t for t in ("timestamp", "merge", "map", "seq"))
# Tags whose scalars are kept as the text written: dates, and the YAML 1.1 oddities that a
# plain `<<` or `=` resolves to outside a merge (`run: cat <<` must stay a command).
_TEXT_TAGS = (_STR, _TIMESTAMP, _MERGE, _TAG + "value")
_KEY_TAGS = frozenset((*_TEXT_TAGS, _INT, _FLOAT, _BOOL))
# Only its scalar helpers are used (int/float/bool parsing with YAML 1.1 rules); they keep no
# state, so one shared instance is safe across threads.
_SCALARS = SafeConstructor()
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Fail = Callable[[int | None, str | None, str], NoReturn]


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _sub(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


# -- from YAML nodes to the data the model validates ------------------------------------------


@dataclass(slots=True)
class _Lines:
    """Where each value of a file was written: the line of the value and of its key, by
    path (``("stages", 1, "retries")``, the locations pydantic reports)."""

    values: dict[Loc, int] = field(default_factory=dict)
    keys: dict[Loc, int] = field(default_factory=dict)

    def value_line(self, loc: Loc) -> int | None:
        return self.values.get(loc)

    def key_line(self, loc: Loc) -> int | None:
        return self.keys.get(loc, self.values.get(loc))

    def __contains__(self, loc: object) -> bool:
        return loc in self.values


class _Budget:
    """The node-count, depth and recursion guards of the builder. YAML is measured first
    (:func:`_measure`), so this is a second line of defence."""

    def __init__(self, fail: Fail) -> None:
        self.fail = fail
        self.count = 0
        self.active: set[int] = set()

    def enter(self, obj: object, line: int | None, loc: Loc, depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            self.fail(
                line,
                render_key(loc),
                f"more than {MAX_NODES:,} values, counting what aliases repeat: "
                "too large for a workflow",
            )
        if depth > MAX_DEPTH:
            self.fail(line, render_key(loc), f"nested more than {MAX_DEPTH} levels deep")
        if id(obj) in self.active:
            self.fail(line, render_key(loc), "recursive alias: a value contains itself")


def _measure(root: Node, fail: Fail) -> int:
    """How many nodes ``root`` expands to with aliases followed, refusing past
    :data:`MAX_NODES` (alias bomb), :data:`MAX_DEPTH` or a recursive alias.

    Sizes are memoised per node object, so this costs one visit per node *as written*: a
    billion-laughs file is refused in milliseconds instead of after building 100,000 values.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node, key: str, depth: int) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        line = node.start_mark.line + 1
        if depth > MAX_DEPTH:
            fail(line, key, f"nested more than {MAX_DEPTH} levels deep")
        if id(node) in active:
            fail(line, key, "recursive alias: a value contains itself")
        total = 1
        if isinstance(node, SequenceNode | MappingNode):
            active.add(id(node))
            if isinstance(node, SequenceNode):
                children = [(f"{key}[{i}]", child) for i, child in enumerate(node.value)]
            else:
                children = []
                for key_node, value_node in node.value:
                    name = key_node.value if isinstance(key_node, ScalarNode) else "?"
                    children += [(key, key_node), (_sub(key, str(name)), value_node)]
            for child_key, child in children:
                total += size(child, child_key, depth + 1)
                if total > MAX_NODES:
                    fail(
                        line,
                        key,
                        f"more than {MAX_NODES:,} values, counting what aliases repeat: "
                        "too large for a workflow",
                    )
            active.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(root, "", 0)


class _YamlBuilder:
    """Turns a composed YAML node graph into plain data (dicts, lists, :class:`YamlScalar`,
    None) and the line of every value, following aliases (which the composer leaves as shared
    node objects) under the :class:`_Budget`."""

    def __init__(self, fail: Fail) -> None:
        self.fail = fail
        self.budget = _Budget(fail)
        self.lines = _Lines()

    def _fail(self, line: int | None, loc: Loc, problem: str) -> NoReturn:
        self.fail(line, render_key(loc), problem)

    def build(self, node: Node, loc: Loc, depth: int = 0) -> Any:
        line = node.start_mark.line + 1
        self.lines.values[loc] = line
        self.budget.enter(node, line, loc, depth)
        if isinstance(node, ScalarNode):
            return self._scalar(node, line, loc)
        self.budget.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                self._check_tag(node, _SEQ, line, loc)
                return [self.build(n, (*loc, i), depth + 1) for i, n in enumerate(node.value)]
            if isinstance(node, MappingNode):
                self._check_tag(node, _MAP, line, loc)
                return self._entries(node, loc, depth)
        finally:
            self.budget.active.discard(id(node))
        self._fail(line, loc, f"unsupported YAML node {type(node).__name__}")

    def _check_tag(self, node: Node, expected: str, line: int, loc: Loc) -> None:
        if node.tag != expected:
            self._fail(line, loc, f"unsupported YAML tag {node.tag!r}")

    def _entries(self, node: MappingNode, loc: Loc, depth: int) -> dict[str, Any]:
        explicit: dict[str, Any] = {}
        merged: dict[str, tuple[int, int, Any]] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE:
                self.budget.enter(key_node, key_line, loc, depth + 1)
                self._merge(value_node, loc, depth + 1, merged)
                continue
            name = self._key(key_node, loc, depth + 1)
            sub = (*loc, name)
            if name in explicit:
                first = self.lines.keys[sub]
                self._fail(key_line, sub, f"duplicate key (first at line {first})")
            self.lines.keys[sub] = key_line
            explicit[name] = self.build(value_node, sub, depth + 1)
        for name, (key_line, value_line, value) in merged.items():
            if name not in explicit:
                explicit[name] = value
                self.lines.keys[(*loc, name)] = key_line
                self.lines.values.setdefault((*loc, name), value_line)
        return explicit

    def _merge(
        self, node: Node, loc: Loc, depth: int, into: dict[str, tuple[int, int, Any]]
    ) -> None:
        # YAML merge keys: `<<: *base` or `<<: [*a, *b]`; explicit keys win, then the first
        # merged mapping that has the key.
        sources = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, SequenceNode):
            self.budget.enter(node, node.start_mark.line + 1, loc, depth)
        for source in sources:
            if not isinstance(source, MappingNode):
                line = source.start_mark.line + 1
                self._fail(line, loc, "'<<' (merge) expects a mapping or a list of mappings")
            # Built at a scratch location: its lines become the merging mapping's below.
            scratch = _YamlBuilder.__new__(_YamlBuilder)
            scratch.fail, scratch.budget, scratch.lines = self.fail, self.budget, _Lines()
            built = scratch.build(source, (), depth + 1)
            for name, value in built.items():
                if name not in into:
                    into[name] = (
                        scratch.lines.keys.get((name,), source.start_mark.line + 1),
                        scratch.lines.values.get((name,), source.start_mark.line + 1),
                        value,
                    )
                    for sub, line in scratch.lines.values.items():
                        if sub[:1] == (name,) and len(sub) > 1:
                            self.lines.values.setdefault((*loc, *sub), line)
                    for sub, line in scratch.lines.keys.items():
                        if sub[:1] == (name,) and len(sub) > 1:
                            self.lines.keys.setdefault((*loc, *sub), line)

    def _key(self, node: Node, loc: Loc, depth: int) -> str:
        line = node.start_mark.line + 1
        self.budget.enter(node, line, loc, depth)
        if not isinstance(node, ScalarNode):
            self._fail(line, loc, "a key must be a plain string, not a list or mapping")
        if node.tag == _NULL:
            self._fail(line, loc, "a key must not be empty or null")
        if node.tag not in _KEY_TAGS:
            self._fail(line, loc, f"unsupported YAML tag {node.tag!r} on a key")
        text: str = node.value
        if "\x00" in text:
            self._fail(line, loc, f"NUL character in key {short_repr(text)}")
        return text

    def _scalar(self, node: ScalarNode, line: int, loc: Loc) -> YamlScalar | None:
        raw: str = node.value
        tag = node.tag
        value: str | int | float | bool
        try:
            if tag == _STR and not node.style and _EXPONENT.fullmatch(raw):
                value = float(raw)  # `1e-3`: a number in YAML 1.2, text in YAML 1.1
            elif tag in _TEXT_TAGS:
                value = raw
            elif tag == _INT:
                value = _SCALARS.construct_yaml_int(node)
            elif tag == _FLOAT:
                value = _SCALARS.construct_yaml_float(node)
            elif tag == _BOOL:
                value = _SCALARS.construct_yaml_bool(node)
            elif tag == _NULL:
                return None
            else:
                self._fail(line, loc, f"unsupported YAML tag {tag!r}")
        except (ValueError, KeyError, OverflowError):
            kind = tag.rsplit(":", 1)[-1]
            self._fail(line, loc, f"invalid or too large {kind} {short_repr(raw)}")
        if "\x00" in raw:
            self._fail(line, loc, "NUL character in a string (from an escape)")
        return YamlScalar(raw, value)


# -- loading ----------------------------------------------------------------------------------


def _line_in(text: str, mark: Any, context: Any) -> int | None:
    """The 1-based line of a YAML problem. One found at the end of the file (an unclosed
    ``[``) is told at the line where what was left open began, and never past the last
    line: an editor's go-to-line lands on something."""
    if mark is None:
        return None
    lines = max(1, len(text.splitlines()))
    line: int = mark.line + 1
    if line > lines and context is not None:
        line = context.line + 1
    return min(line, lines)


def _tab_at(text: str, index: int) -> bool:
    """Whether a YAML error's mark points at a tab: PyYAML says "found character that
    cannot start any token", which does not name it."""
    return 0 <= index < len(text) and text[index] == "\t"


def _yaml_problem(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "syntax error"
        if exc.context:
            problem = f"{problem} ({exc.context})"
        if mark is not None and _tab_at(text, mark.index):
            problem = "a tab where YAML expects spaces (indent with spaces only)"
        return _line_in(text, mark, exc.context_mark), f"invalid YAML: {problem}"
    if isinstance(exc, ReaderError):
        return _line_of(text, exc.position), f"invalid YAML: {exc.reason}"
    return None, f"invalid YAML: {exc}"


@dataclass(slots=True)
class _Parsed:
    """A file read and parsed, before the model validates it."""

    data: Any
    lines: _Lines
    #: The id it defines (declared, or the default it would get); None when unknown.
    workflow_id: str | None
    id_line: int | None


def _parse(text: str, path: str | None, default_id: str | None) -> _Parsed:
    """The hostile-input checks, YAML composition, the alias-bomb fuse, and the default id."""

    def fail(line: int | None, key: str | None, problem: str) -> NoReturn:
        raise WorkflowError(problem, path=path, line=line, key=key)

    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        fail(None, None, f"file too large (the limit is {MAX_FILE_BYTES:,} bytes)")
    if text.startswith("\ufeff"):
        text = text[1:]
    bad = _NOT_YAML_TEXT.search(text)
    if bad:
        char = bad.group()
        what = "NUL character" if char == "\x00" else f"control character {char!r}"
        fail(
            _line_of(text, bad.start()),
            None,
            f"{what} in the file; write it as an escape in a double-quoted string",
        )
    loader = _YAML_LOADER(text)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        line, problem = _yaml_problem(exc, text)
        fail(line, None, problem)
    except RecursionError:  # only the pure-Python composer recurses; libyaml caps nesting
        get_mark = getattr(loader, "get_mark", None)
        line = get_mark().line + 1 if callable(get_mark) else None
        fail(line, None, "invalid YAML: nested too deeply")
    finally:
        loader.dispose()
    if root is None:
        fail(None, None, "empty file; expected a mapping with 'stages'")
    _measure(root, fail)  # before building anything: the alias-bomb fuse
    builder = _YamlBuilder(fail)
    data = builder.build(root, ())
    lines = builder.lines
    workflow_id: str | None = None
    id_line: int | None = None
    if isinstance(data, dict):
        declared = data.get("id")
        if declared is not None:
            id_line = lines.keys.get(("id",))
            if isinstance(declared, str):
                try:
                    workflow_id = validate_identifier(str(declared), "workflow id")
                except WorkflowError:
                    workflow_id = None  # reported by the model, at its line
        elif default_id is not None:
            try:
                workflow_id = validate_identifier(default_id, "workflow id")
            except WorkflowError as exc:
                fail(None, "id", f"{exc.problem} (taken from the file name; set 'id:')")
            data["id"] = workflow_id
    return _Parsed(data, lines, workflow_id, id_line)


def _validated(parsed: _Parsed, path: str | None) -> WorkflowDefinition:
    definition = validate(
        WorkflowDefinition, parsed.data, source="file", path=path, locations=parsed.lines
    )
    return definition if path is None else definition.model_copy(update={"path": path})


def load_workflow_text(
    text: str, *, path: str | None = None, default_id: str | None = None
) -> WorkflowDefinition:
    """Parse and validate one workflow from text; ``path`` is only used in messages and kept
    on the result, ``default_id`` is the id used when the text has none."""
    return _validated(_parse(text, path, default_id), path)


def _read_text(path: Path) -> str:
    shown = str(path)

    def fail(problem: str, line: int | None = None) -> NoReturn:
        raise WorkflowError(problem, path=shown, line=line)

    try:
        info = path.stat()
    except FileNotFoundError:
        fail("no such file")
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        fail("is a directory, not a workflow file")
    if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
        fail("not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        fail(f"file too large ({info.st_size:,} bytes; the limit is {MAX_FILE_BYTES:,})")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        fail(f"cannot read: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        fail(f"file too large (the limit is {MAX_FILE_BYTES:,} bytes)")
    nul = data.find(b"\x00")
    if nul >= 0:
        fail(
            "NUL byte in the file; workflow files must be UTF-8 text",
            data.count(b"\n", 0, nul) + 1,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(
            f"invalid UTF-8 (byte {exc.start}); workflow files must be UTF-8 text",
            data.count(b"\n", 0, exc.start) + 1,
        )


def load_workflow_file(path: Path) -> WorkflowDefinition:
    """Load one workflow file; its ``id`` defaults to the file's stem."""
    return _validated(_parse(_read_text(path), str(path), path.stem), str(path))


@dataclass(slots=True)
class _Scanned:
    path: Path
    workflow_id: str | None  # the id, or the one it was about to get, or None if unknown
    definition: WorkflowDefinition | None = None
    id_line: int | None = None
    error: WorkflowError | None = None


def _scan(directory: Path) -> tuple[list[_Scanned], list[WorkflowError]]:
    """Every workflow file of ``directory`` loaded independently, plus directory errors.

    Dot files are skipped: editors leave lock and backup files there (``.#etl.yaml``). The
    extension is read in any case (``ETL.YML``, as some systems write it)."""
    try:
        files = sorted(
            (
                p
                for p in directory.iterdir()
                if p.suffix.lower() in WORKFLOW_SUFFIXES
                and not p.name.startswith(".")
                and not p.is_dir()
            ),
            key=lambda p: p.name,
        )
    except FileNotFoundError:
        return [], []
    except NotADirectoryError:
        return [], [WorkflowError("not a directory", path=str(directory))]
    except OSError as exc:
        return [], [WorkflowError(f"cannot list: {exc.strerror or exc}", path=str(directory))]
    scanned: list[_Scanned] = []
    for file in files:
        parsed: _Parsed | None = None
        try:
            parsed = _parse(_read_text(file), str(file), file.stem)
            definition = _validated(parsed, str(file))
        except WorkflowError as exc:
            wid = parsed.workflow_id if parsed is not None else None
            scanned.append(_Scanned(file, wid, error=exc))
        else:
            scanned.append(_Scanned(file, definition.id, definition, parsed.id_line))
    return scanned, []


def discover_workflows(
    directory: Path,
) -> tuple[list[WorkflowDefinition], list[WorkflowError]]:
    """Every workflow in ``directory`` (``*.yaml``, ``*.yml``, by file name) and one error per
    file that cannot be used, so one bad file never hides the others. A missing directory is
    simply empty. When files share an id, none of them is listed: each is an error naming
    the others (as :func:`find_workflow` refuses that id), whatever the files are called."""
    scanned, errors = _scan(directory)
    definitions: list[WorkflowDefinition] = []
    owners: dict[str, list[_Scanned]] = {}
    for item in scanned:
        if item.error is not None:
            errors.append(item.error)
        # A file that does not load claims its id too (its stem when unknown), as
        # find_workflow answers that id with its error.
        owners.setdefault(item.workflow_id or item.path.stem, []).append(item)
    for item in scanned:
        if item.definition is None:
            continue
        same = owners[item.definition.id]
        if len(same) == 1:
            definitions.append(item.definition)
        else:
            errors.append(_duplicate_error(item, [o.path for o in same if o is not item]))
    return definitions, errors


def _duplicate_error(item: _Scanned, others: list[Path]) -> WorkflowError:
    where = ", ".join(str(o) for o in others)
    return WorkflowError(
        f"duplicate workflow id {item.workflow_id!r}: also defined in {where}",
        path=str(item.path),
        line=item.id_line,
        key="id",
    )


def find_workflow(directory: Path, workflow_id: str) -> WorkflowDefinition:
    """The workflow with ``workflow_id`` in ``directory``.

    A file that would define it but is malformed raises its own error rather than "unknown"
    (a file with a syntax error counts as defining its stem). Two files defining it raise the
    duplicate error instead of silently picking one.
    """
    validate_identifier(workflow_id, "workflow id")
    scanned, errors = _scan(directory)
    matches = [
        s
        for s in scanned
        if s.workflow_id == workflow_id or (s.workflow_id is None and s.path.stem == workflow_id)
    ]
    for item in matches:
        if item.error is not None:
            raise item.error
    if len(matches) > 1:
        raise _duplicate_error(matches[0], [m.path for m in matches[1:]])
    if matches and matches[0].definition is not None:
        return matches[0].definition
    if errors:
        raise errors[0]
    if not directory.is_dir():
        shown = clean_text(str(directory))
        raise WorkflowError(
            f"unknown workflow {workflow_id!r}: there is no workflows directory {shown}"
        )
    raise WorkflowError(_unknown(workflow_id, scanned))


def _unknown(workflow_id: str, scanned: list[_Scanned]) -> str:
    """Why no workflow has this id, with what would help: the close id meant, the file of
    that name that declares another id, the files that do not load (one of them may be it)."""
    known = sorted({s.definition.id for s in scanned if s.definition is not None})
    message = (
        f"unknown workflow {workflow_id!r}{suggest(workflow_id, known)}; known: {listed(known)}"
    )
    named = next((s for s in scanned if s.path.stem == workflow_id and s.definition), None)
    if named is not None and named.definition is not None:
        message += f" ({clean_text(named.path.name)} declares id {named.definition.id!r})"
    broken = sum(1 for s in scanned if s.error is not None)
    if broken:
        message += (
            f"; {broken} file{'s' if broken > 1 else ''} in the workflows directory "
            f"{'do' if broken > 1 else 'does'} not load ('vc flow list' shows why)"
        )
    return message


def copy_note(directory: Path, workflow_id: str, snapshot: dict[str, Any] | None) -> str | None:
    """What a retry says about the workflow's file, which the session does not read: it
    runs its own copy, taken when it was created. A note when the file is gone or does not
    load now, or says something else than that copy (a fix made since); None when it
    says the same (``path`` and ``max_parallel`` aside: a moved workspace, ``--max-parallel``)."""
    try:
        current = find_workflow(directory, workflow_id).to_dict()
    except WorkflowError as exc:
        return (
            f"the workflow file of {workflow_id!r} does not load now ({exc}); the session "
            "runs its own copy as it was when the session was created"
        )
    try:  # the stored copy as this code writes one (older snapshots lack newer defaults)
        stored = WorkflowDefinition.from_dict(dict(snapshot or {})).to_dict()
    except Exception:  # a snapshot this code cannot compare: nothing to say
        return None
    ignored = {"max_parallel": None, "path": None}
    if {**current, **ignored} == {**stored, **ignored}:
        return None
    return (
        f"workflow {workflow_id!r} has changed since this session was created; the session "
        "runs its own copy as it was then (start a new session to run the file as it is now)"
    )
