"""Loading one Alembic revision file by its path, without the project's ``env.py``.

Standard library, Alembic and SQLAlchemy only: this module runs inside the render worker
(``_render_worker.py``, a process of its own) as well as inside Runway. A revision file imports
``alembic`` and ``sqlalchemy``; many also import the application (``from app.models import
Base``) or a package Runway does not have. Such a module is replaced by a stand-in whose every
attribute is a placeholder: a revision that only imports it still loads and runs, and one whose
``upgrade()`` uses it fails with :class:`MissingImport`, naming the module and the line.
"""

from __future__ import annotations

import ast
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# What env.py files import that is not a plugin: the standard library, Alembic, SQLAlchemy.
_NOT_PLUGINS = frozenset(sys.stdlib_module_names) | {"alembic", "sqlalchemy", "__future__"}


class MissingImport(Exception):
    """A revision used something of a module that cannot be imported here."""

    def __init__(self, module: str, what: str) -> None:
        super().__init__(f"{module}: {what}")
        self.module = module
        self.what = what


class _Placeholder:
    """Anything taken from a missing module. Using it (calling it, subclassing it, reading
    it as a value) raises MissingImport; passing it around does not."""

    def __init__(self, module: str, path: str) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_path", path)

    def _fail(self, what: str) -> MissingImport:
        return MissingImport(object.__getattribute__(self, "_module"), what)

    def __getattr__(self, name: str) -> _Placeholder:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        path = f"{object.__getattribute__(self, '_path')}.{name}"
        return _Placeholder(object.__getattribute__(self, "_module"), path)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail(f"calls {object.__getattribute__(self, '_path')}()")

    def __mro_entries__(self, bases: tuple[Any, ...]) -> tuple[type, ...]:
        raise self._fail(f"subclasses {object.__getattribute__(self, '_path')}")

    def _use(self, *args: Any, **kwargs: Any) -> Any:
        raise self._fail(f"uses {object.__getattribute__(self, '_path')}")

    __iter__ = __len__ = __bool__ = __str__ = __int__ = __float__ = __index__ = _use
    __getitem__ = __contains__ = __eq__ = __lt__ = __gt__ = __add__ = __or__ = _use
    # Unhashable, as any class that defines __eq__ and not __hash__.

    def __repr__(self) -> str:
        return f"<missing {object.__getattribute__(self, '_path')}>"


class _StubModule(ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Placeholder(self.__name__.split(".")[0], f"{self.__name__}.{name}")


class _Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Stands in for the modules under ``tops`` (the top-level names that failed to import)."""

    def __init__(self) -> None:
        self.tops: set[str] = set()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".")[0] in self.tops:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []  # a package: its submodules are stand-ins too
        return module

    def exec_module(self, module: ModuleType) -> None:
        pass


STUBS = _Stubs()
sys.meta_path.append(STUBS)


@dataclass
class Failure:
    """Why a revision cannot be rendered (or run) without its application.

    ``category``: ``imports_application`` (module), ``missing_package`` (module),
    ``reads_database`` (the query tried), ``raises`` (it fails online too),
    ``unknown_operation``, ``timed_out``.
    """

    category: str
    message: str
    line: int | None = None  # in the revision file
    module: str = ""
    query: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "message": self.message,
            "line": self.line,
            "module": self.module,
            "query": self.query,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        line = data.get("line")
        return cls(
            category=str(data.get("category") or ""),
            message=str(data.get("message") or ""),
            line=int(line) if line is not None else None,
            module=str(data.get("module") or ""),
            query=str(data.get("query") or ""),
        )


@dataclass
class Project:
    """What Runway knows of the project around a script folder, from files alone."""

    location: Path
    roots: list[Path] = field(default_factory=list)  # where the application's modules may live

    @classmethod
    def around(cls, location: Path) -> Project:
        roots = [location, *list(location.parents)[:3]]
        return cls(location, [r for r in roots if r != Path(r.anchor)])

    def owns(self, top: str) -> bool:
        """Whether ``top`` is one of the application's own modules (a folder or file named so
        beside the script folder or up to three levels above it)."""
        return any((root / top).is_dir() or (root / f"{top}.py").is_file() for root in self.roots)


def env_imports(env_py: Path) -> list[str]:
    """The modules ``env.py`` imports (as written: ``alembic_utils.pg_view``), other than the
    standard library, Alembic and SQLAlchemy (read with ast; env.py is never run). A plugin
    registers its operations when its module is imported, often a submodule."""
    try:
        tree = ast.parse(env_py.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return []
    found: list[str] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        for name in names:
            if name.split(".")[0] not in _NOT_PLUGINS and name not in found:
                found.append(name)
    return found


def load(path: Path, name: str) -> ModuleType:
    """Import the revision file at ``path`` as module ``name``. A module it imports that is
    not installed is replaced by a stand-in (see :data:`STUBS`); nothing is written beside the
    file (the process runs with ``-B``, or ``sys.dont_write_bytecode`` is set here)."""
    sys.dont_write_bytecode = True
    for _ in range(20):
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if not top or top in STUBS.tops:
                raise
            STUBS.tops.add(top)
            continue
        return module
    raise ImportError(f"{path}: too many missing modules")


def line_in(exc: BaseException, path: Path) -> int | None:
    """The innermost line of ``path`` in the exception's traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


def import_line(path: Path, top: str) -> int | None:
    """The line where the revision file imports ``top``."""
    try:
        tree = ast.parse(path.read_bytes())
    except (OSError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == top for a in node.names):
            return node.lineno
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == top:
            return node.lineno
    return None


def describe(exc: BaseException, path: Path, project: Project) -> Failure:
    """The failure a revision's exception means (``reads_database`` is raised as
    ReadsDatabase by the offline connection and described by the renderer)."""
    line = line_in(exc, path)
    if isinstance(exc, MissingImport):
        top = exc.module
        where = line or import_line(path, top)
        if project.owns(top):
            return Failure(
                "imports_application",
                f"it {exc.what}, from the application's own module {top!r}, which Runway does "
                "not import",
                where,
                module=top,
            )
        return Failure(
            "missing_package",
            f"it {exc.what}, from {top!r}, a package not installed in Runway's environment",
            where,
            module=top,
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        # An import inside upgrade(): the stand-ins only cover imports at the top of the file.
        top = exc.name.split(".")[0]
        return describe(MissingImport(top, f"imports {exc.name}"), path, project)
    if isinstance(exc, AttributeError) and _is_op(getattr(exc, "obj", None)):
        return Failure(
            "unknown_operation",
            f"op.{exc.name} is not an Alembic operation: a plugin adds it",
            line,
            module=str(exc.name or ""),
        )
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return Failure(
        "raises",
        f"{type(exc).__name__}{': ' + text if text else ''} (it fails this way online too)",
        line,
    )


def _is_op(obj: object) -> bool:
    from alembic import op
    from alembic.operations import Operations

    return obj is op or isinstance(obj, Operations)
