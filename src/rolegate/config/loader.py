"""Load a rolegate YAML config: positions of every key, secret interpolation, validation.

Every problem is reported as ``FILE:LINE: key.path: reason`` so a person can act on it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from rolegate.errors import ConfigError

if TYPE_CHECKING:
    from rolegate.config.schema import Config

# ${NAME} reads the environment, ${file:PATH} reads a secret file; $${ is a literal "${".
_INTERPOLATION = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

KeyPath = tuple[str | int, ...]


class _PositionedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""


def _walk(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], problems: list[str], file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                where = ".".join(map(str, (*path, key)))
                problems.append(f"{file}:{line}: {where}: duplicate key (first at line {seen[key]})")
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, file)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _walk(item, (*path, index), lines, problems, file)


class SourceMap:
    """Maps key paths of the loaded document to line numbers of its file."""

    __slots__ = ("file", "lines")

    def __init__(self, file: str, lines: dict[KeyPath, int]) -> None:
        self.file = file
        self.lines = lines

    def line_of(self, path: KeyPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def where(self, path: KeyPath) -> str:
        """``FILE:LINE: a.b[2].c`` for messages."""
        line = self.line_of(path)
        return f"{self.file}:{line}: {format_path(path)}" if line else f"{self.file}: {format_path(path)}"


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _interpolate(
    value: Any, path: KeyPath, source: SourceMap, base_dir: Path, problems: list[str], env: Mapping[str, str]
) -> Any:
    """``value`` with ``${NAME}`` read from ``env`` and ``${file:PATH}`` from files (relative to ``base_dir``)."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), source, base_dir, problems, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), source, base_dir, problems, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        ref = match.group(1).strip()
        if ref.startswith("file:"):
            file_path = Path(ref[5:].strip())
            if not file_path.is_absolute():
                file_path = base_dir / file_path
            try:
                return file_path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                problems.append(f"{source.where(path)}: cannot read secret file {file_path}: {exc.strerror}")
                return ""
        if not _ENV_NAME.match(ref):
            problems.append(f"{source.where(path)}: '${{{ref}}}' is neither ${{ENV_NAME}} nor ${{file:PATH}}")
            return ""
        env_value = env.get(ref)
        if env_value is None:
            problems.append(f"{source.where(path)}: environment variable {ref} is not set")
            return ""
        return env_value

    return _INTERPOLATION.sub(replace, value)


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text into plain Python values and a SourceMap; raise ConfigError on bad YAML."""
    loader = None
    try:
        loader = _PositionedLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{file}:1: the file is empty")
        lines: dict[KeyPath, int] = {}
        problems: list[str] = []
        _walk(node, (), lines, problems, file)
        if problems:
            raise ConfigError(problems)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"{mark.line + 1}" if mark else "?"
        raise ConfigError(f"{file}:{line}: invalid YAML: {exc.problem or exc}") from None
    except yaml.reader.ReaderError as exc:
        raise ConfigError(
            f"{file}: invalid YAML: character #x{exc.character:04x} is not allowed (position {exc.position})"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: invalid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{file}: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, SourceMap(file, lines)


def validation_problems(exc: ValidationError, source: SourceMap) -> list[str]:
    """Turn pydantic's errors into ``FILE:LINE: key.path: reason`` lines."""
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if not (isinstance(part, str) and part.startswith("function-")))
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see config-shape.yaml for the accepted keys)"
        elif err["type"] == "missing":
            message = "required key is missing"
        message = message.removeprefix("Value error, ")
        problems.append(f"{source.where(loc)}: {message}")
    return problems


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> "Config":
    """Read, interpolate and validate a config file. Raises ConfigError listing every problem.

    ``${NAME}`` is read from ``env`` (default: the process environment, never modified)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc}") from None
    return load_config_text(text, file=file, base_dir=Path(path).resolve().parent, env=env)


def load_config_text(
    text: str, *, file: str = "<config>", base_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> "Config":
    from rolegate.config.schema import Config  # schema imports this module (SourceMap): a cycle at the top

    data, source = parse_yaml(text, file)
    if not isinstance(data, dict):
        raise ConfigError(f"{file}:1: the top level must be a mapping of sections (server, routes, ...)")
    problems: list[str] = []
    data = _interpolate(data, (), source, base_dir or Path.cwd(), problems, os.environ if env is None else env)
    if problems:
        raise ConfigError(problems)
    try:
        config = Config.model_validate(data, context={"source": source, "base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, source)) from None
    problems = config.cross_check(source)
    if problems:
        raise ConfigError(problems)
    object.__setattr__(config, "source", source)
    return config
