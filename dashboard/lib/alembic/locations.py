"""Where an Alembic project keeps its scripts, read the way Alembic 1.20 reads them.

A project is registered either as its script folder (``env.py`` and ``versions/``), or as the
file Alembic is run with: an ``alembic.ini`` (its ``[alembic]`` section, or another one named
as ``alembic.ini#billing``, as ``alembic -n billing`` would) or a ``pyproject.toml``
(``[tool.alembic]``). An ``alembic.ini`` whose section lacks an option falls back to the
``pyproject.toml`` beside it, as Alembic does when run from the ini's folder.

From the file, as ``alembic.config.Config`` and ``ScriptDirectory.from_config`` read it:

- ``script_location``: a path (``%(here)s`` is the file's folder; a relative path starts
  there too, where Alembic would start at the working directory, which for a project is the
  ini's folder), or a package resource ``mypkg:migrations`` / ``mypkg.sub:migrations``. The
  package is found without importing it: ``prepend_sys_path`` first (as Alembic prepends it to
  ``sys.path``), then Runway's own ``sys.path``, then a folder of that name beside the file;
  a dotted name is walked folder by folder, so no package's ``__init__`` ever runs.
- ``version_locations``: split on ``path_separator`` (or the older ``version_path_separator``;
  neither: on spaces and commas), each entry a path or a package resource like the above; when
  absent, ``<script_location>/versions``.
- ``recursive_version_locations``: ``true`` walks the sub-folders of each version location.

Nothing here executes or imports anything of the project.
"""

from __future__ import annotations

import configparser
import contextlib
import importlib.machinery
import importlib.util
import os
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SECTION = "alembic"

# Alembic's Config._get_file_separator_char.
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}
# Alembic's legacy splitting when no separator is configured.
_LEGACY_VERSIONS_SPLIT = re.compile(r", *|(?: +)")
_LEGACY_SYS_PATH_SPLIT = re.compile(r", *|(?: +)|\:")


class NotAnAlembicProject(ValueError):
    """The script location is not an Alembic project (see the message for why)."""


@dataclass(frozen=True)
class ScriptConfig:
    """Where one project's scripts are: its script folder and its version locations.

    Paths read from a file are absolute and normalised (symbolic links kept); a registered
    folder keeps the form it was given in (``versions`` under it).
    """

    registered: Path  # the folder or file as registered (without its #section)
    script_location: Path
    version_locations: tuple[Path, ...]
    recursive: bool = False
    config_file: Path | None = None  # the alembic.ini or pyproject.toml read
    section: str = DEFAULT_SECTION
    explicit_versions: bool = False  # whether version_locations was configured

    @property
    def root(self) -> Path:
        """The folder paths are shown from: the config file's, else the script folder."""
        return _absolute(self.config_file.parent) if self.config_file else self.script_location

    @property
    def versions_named_in(self) -> str | None:
        """The file whose ``version_locations`` named them (None: ``versions/``, the default)."""
        return self.config_file.name if self.explicit_versions and self.config_file else None

    def shown(self, path: Path) -> str:
        """``path`` as a person reads it: relative to :attr:`root` when under it."""
        path = _absolute(path)
        root = _absolute(self.root)
        if path == root:
            return "."
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
        return path.as_posix()

    def relative(self, path: Path) -> str:
        """What ``Revision.path`` holds: relative to the script location when inside it
        (so ``script_location / result`` is the file), else the absolute path."""
        location = _absolute(self.script_location)
        path = _absolute(path)
        if path.is_relative_to(location):
            return path.relative_to(location).as_posix()
        return path.as_posix()

    def revision_files(self) -> Iterator[Path]:
        """Candidate revision files, in the order Alembic loads them: each version location
        in turn, its files sorted (sub-folders after, sorted, when recursive). A file reached
        twice (overlapping locations, symbolic links) comes once, as Alembic loads it once.

        Raises :class:`NotAnAlembicProject` when a version location cannot be listed.
        """
        seen: set[str] = set()
        for folder in self.version_locations:
            for path in self._listing(folder):
                real = os.path.realpath(path)
                if real in seen:
                    continue
                seen.add(real)
                yield path

    def _listing(self, folder: Path) -> list[Path]:
        try:
            top = sorted(folder.iterdir())
        except OSError as exc:
            raise NotAnAlembicProject(
                f"{self.registered} is not an Alembic project: {self._named(folder)} cannot be "
                f"read ({exc.strerror})"
            ) from None
        files = [p for p in top if _is_revision_file(p.name) and p.is_file()]
        if not self.recursive:
            return files
        for root, dirs, names in os.walk(folder):
            dirs.sort()
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if Path(root) == folder:
                continue
            files += [Path(root, n) for n in sorted(names) if _is_revision_file(n)]
        return [p for p in files if p.is_file()]

    def fingerprint(self) -> tuple[float, int]:
        """Changes whenever a revision file is added, removed or edited, or the config file
        (or the pyproject.toml beside it) is: the newest modification time, and a count."""
        stamps: list[float] = []
        extra = [self.config_file] if self.config_file else []
        if self.config_file and self.config_file.suffix != ".toml":
            extra.append(self.config_file.parent / "pyproject.toml")
        for path in [*extra, *self.version_locations]:
            with contextlib.suppress(OSError):
                stamps.append(path.stat().st_mtime)
        try:
            for path in self.revision_files():
                stamps.append(path.stat().st_mtime)
        except (NotAnAlembicProject, OSError):
            return (0.0, -1)
        return (max(stamps, default=0.0), len(stamps))

    def _named(self, folder: Path) -> str:
        if not self.explicit_versions and self.config_file is None:
            return "versions/"
        return f"version location {self.shown(folder)}"


def _is_revision_file(name: str) -> bool:
    return name.endswith(".py") and name != "__init__.py" and not name.startswith(".")


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def split_section(location: str | Path) -> tuple[Path, str | None]:
    """``deploy/alembic.ini#billing`` → (``deploy/alembic.ini``, ``billing``).

    Only a name that does not exist as written is split (a file may have ``#`` in its name).
    """
    path = Path(location)
    if "#" in path.name and not path.exists():
        name, _, section = path.name.rpartition("#")
        if name and section.strip():
            return path.with_name(name), section.strip()
    return path, None


def read_config(location: str | Path, section: str | None = None) -> ScriptConfig:
    """Where the project registered as ``location`` keeps its scripts.

    Raises :class:`NotAnAlembicProject`, naming what is wrong, when the file or its section is
    missing, an option cannot be read, or a package resource cannot be found. Whether the
    folders exist is :func:`check_config`'s business.
    """
    path, named = split_section(location)
    section = section or named or DEFAULT_SECTION
    if path.is_dir():
        return ScriptConfig(path, path, (path / "versions",), section=section)
    if not path.exists():
        what = "file" if path.suffix in {".ini", ".toml", ".cfg"} else "folder"
        raise NotAnAlembicProject(f"{path} is not an Alembic project: the {what} does not exist")
    return _FileReader(path, section).config()


def check_config(location: str | Path, section: str | None = None) -> ScriptConfig:
    """:func:`read_config`, and every folder it names checked: the script folder holds an
    ``env.py``, and each version location is a folder."""
    config = read_config(location, section)
    path = config.registered
    script = config.script_location

    def refuse(reason: str) -> NotAnAlembicProject:
        return NotAnAlembicProject(f"{path} is not an Alembic project: {reason}")

    if config.config_file is None:  # a registered folder: today's messages
        if not (script / "env.py").is_file():
            hint = ""
            if (script / "alembic.ini").is_file():
                hint = " (it holds an alembic.ini: register that file instead)"
            raise refuse(f"no env.py found{hint}")
        if not (script / "versions").is_dir():
            hint = ""
            if (script.parent / "alembic.ini").is_file():
                hint = (
                    f"; if {script.parent / 'alembic.ini'} sets version_locations, register "
                    "that file instead"
                )
            raise refuse(f"no versions/ folder found{hint}")
        return config

    shown = config.shown(script)
    if not script.exists():
        raise refuse(f"its script_location {shown} does not exist")
    if not script.is_dir():
        raise refuse(f"its script_location {shown} is a file, not a folder")
    if not (script / "env.py").is_file():
        raise refuse(f"no env.py in its script_location {shown}")
    for folder in config.version_locations:
        if folder.is_dir():
            continue
        if not config.explicit_versions:
            raise refuse(
                f"no versions/ folder in its script_location {shown}, and it sets no "
                "version_locations"
            )
        state = "is not a folder" if folder.exists() else "does not exist"
        raise refuse(f"version location {config.shown(folder)} (version_locations) {state}")
    return config


class _FileReader:
    """An alembic.ini (with the pyproject.toml beside it) or a pyproject.toml, read as
    ``alembic.config.Config`` reads them."""

    def __init__(self, path: Path, section: str) -> None:
        self.path = path
        self.section = section
        self.ini: configparser.ConfigParser | None = None
        self.toml: dict[str, Any] = {}
        self.toml_here = ""
        if path.name == "pyproject.toml" or path.suffix == ".toml":
            self._read_toml(path)
            if not self.toml:
                raise self.refuse("it has no [tool.alembic] table")
        else:
            self._read_ini(path)
            beside = path.parent / "pyproject.toml"
            if beside.is_file():
                self._read_toml(beside)

    def refuse(self, reason: str) -> NotAnAlembicProject:
        return NotAnAlembicProject(f"{self.path} is not an Alembic project: {reason}")

    @property
    def here(self) -> Path:
        return _absolute(self.path.parent)

    def _read_ini(self, path: Path) -> None:
        # Alembic: ConfigParser({"here": <the ini's folder>}), so %(here)s works in any
        # section. Read as UTF-8 (Alembic uses the locale's encoding, UTF-8 on any sane host).
        parser = configparser.ConfigParser({"here": self.here.as_posix()})
        try:
            with path.open(encoding="utf-8") as handle:
                parser.read_file(handle, source=str(path))
        except OSError as exc:
            raise self.refuse(f"it cannot be read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise self.refuse("it is not a text file") from None
        except configparser.Error as exc:
            first = str(exc).splitlines()[0].rstrip(":")
            raise self.refuse(
                f"it is a file, but not an ini file Alembic can read ({first})"
            ) from None
        if not parser.has_section(self.section):
            pyproject = " (nor a [tool.alembic] in the pyproject.toml beside it)"
            raise self.refuse(
                f"it has no [{self.section}] section"
                + ("" if self.section == DEFAULT_SECTION else f" (alembic -n {self.section})")
                + ("" if not self.toml else pyproject)
            )
        self.ini = parser

    def _read_toml(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except OSError as exc:
            raise NotAnAlembicProject(
                f"{path} cannot be read ({exc.strerror}), so {self.path} is not an Alembic project"
            ) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise NotAnAlembicProject(
                f"{path} is not valid TOML ({exc}), so {self.path} is not an Alembic project"
            ) from None
        tool = data.get("tool")
        table = tool.get("alembic") if isinstance(tool, dict) else None
        self.toml = table if isinstance(table, dict) else {}
        self.toml_here = _absolute(path.parent).as_posix()

    # --- Options, as Config.get_alembic_option and friends read them ---

    def _ini_has(self, name: str) -> bool:
        return self.ini is not None and self.ini.has_option(self.section, name)

    def _ini_get(self, name: str) -> str | None:
        if not self._ini_has(name):
            return None
        assert self.ini is not None
        try:
            return self.ini.get(self.section, name)
        except configparser.Error as exc:
            first = str(exc).splitlines()[0]
            raise self.refuse(f"its {name} cannot be read ({first})") from None

    def _toml_format(self, name: str, value: str) -> str:
        try:
            return value % {"here": self.toml_here}
        except (KeyError, ValueError, TypeError) as exc:
            raise self.refuse(f"[tool.alembic] {name} cannot be read ({exc})") from None

    def _toml_str(self, name: str) -> str | None:
        value = self.toml.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.refuse(f"[tool.alembic] {name} is not a string")
        return self._toml_format(name, value)

    def _toml_list(self, name: str) -> list[str] | None:
        value = self.toml.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.refuse(f"[tool.alembic] {name} is not a list of strings")
        return [self._toml_format(name, v) for v in value]

    def option(self, name: str) -> str | None:
        if self._ini_has(name):
            return self._ini_get(name)
        return self._toml_str(name)

    def boolean(self, name: str) -> bool:
        if self._ini_has(name):
            return self._ini_get(name) == "true"  # exactly Alembic's test
        value = self.toml.get(name, False)
        if not isinstance(value, bool):
            raise self.refuse(f"[tool.alembic] {name} is not true or false")
        return value

    def _separator(self, *names: str) -> str | None:
        for name in names:
            value = self._ini_get(name)  # the ini's main section only, as get_main_option
            if value is not None:
                break
        else:
            return None
        if value not in _SEPARATORS:
            raise self.refuse(f"{name} = {value!r} is not one of space, newline, os, ':' or ';'")
        return _SEPARATORS[value]

    def path_list(self, name: str, legacy: re.Pattern[str], *separators: str) -> list[str] | None:
        raw = self._ini_get(name)
        if raw:
            sep = self._separator(*separators)
            parts = legacy.split(raw) if sep is None else raw.split(sep)
            return [p.strip() for p in parts if p.strip()]
        listed = self._toml_list(name)
        return [p.strip() for p in listed if p.strip()] if listed is not None else None

    # --- The result ---

    def config(self) -> ScriptConfig:
        value = self.option("script_location")
        if value is None or not value.strip():
            where = f"[{self.section}] section" if self.ini is not None else "[tool.alembic] table"
            also = " (nor does the pyproject.toml beside it)" if self.ini and self.toml else ""
            raise self.refuse(f"its {where} has no script_location{also}")
        value = value.strip()
        search = [
            self._path(p, "prepend_sys_path", [])
            for p in self.path_list("prepend_sys_path", _LEGACY_SYS_PATH_SPLIT, "path_separator")
            or []
            if not _is_resource(p)
        ]
        script = self._path(value, "script_location", search)
        listed = self.path_list(
            "version_locations",
            _LEGACY_VERSIONS_SPLIT,
            "path_separator",
            "version_path_separator",
        )
        if listed:
            versions = tuple(
                dict.fromkeys(self._path(v, "version_locations", search) for v in listed)
            )
        else:
            versions = (script / "versions",)
        return ScriptConfig(
            registered=self.path,
            script_location=script,
            version_locations=versions,
            recursive=self.boolean("recursive_version_locations"),
            config_file=self.path,
            section=self.section,
            explicit_versions=bool(listed),
        )

    def _path(self, value: str, option: str, search: list[Path]) -> Path:
        if _is_resource(value):
            return self._resource(value, option, search)
        return _absolute(self.here / value)

    def _resource(self, value: str, option: str, search: list[Path]) -> Path:
        """``mypkg.sub:migrations`` → the folder ``migrations`` of package ``mypkg.sub``, as
        ``alembic.util.coerce_resource_to_filename`` finds it, without importing anything."""
        package, *parts = value.split(":")
        names = package.split(".")
        if not all(n.isidentifier() for n in names):
            raise self.refuse(f"its {option} {value!r} does not name a package")
        folder = _package_folder(names, search)
        if folder is None:
            beside = self.here.joinpath(*names)
            if not beside.is_dir():
                raise self.refuse(
                    f"its {option} {value!r} names the package {package!r}, which Runway "
                    f"cannot find (not importable here, and no {'/'.join(names)}/ folder "
                    f"beside {self.path.name})"
                )
            folder = beside
        return _absolute(folder.joinpath(*parts))


def _is_resource(value: str) -> bool:
    """Alembic's test: a relative name holding a colon is a package resource."""
    return not os.path.isabs(value) and ":" in value


def _package_folder(names: list[str], search: list[Path]) -> Path | None:
    """The folder of the (possibly dotted) package, found by its top package's spec and then
    folder names: ``find_spec`` of a dotted name would import its parents, running their
    ``__init__``; this never runs anything."""
    top = names[0]
    spec = None
    if search:
        spec = importlib.machinery.PathFinder.find_spec(top, [str(p) for p in search])
    if spec is None:
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        roots = [Path(p) for p in spec.submodule_search_locations]
    elif spec.has_location and spec.origin and len(names) == 1:
        roots = [Path(spec.origin).parent]  # a plain module: its folder, as resources.files
    else:
        return None
    for name in names[1:]:
        roots = [r / name for r in roots if (r / name).is_dir()]
    return roots[0] if roots else None
