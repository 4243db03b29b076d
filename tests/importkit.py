"""The import graph of ``src/claudemesh``, read from the source with :mod:`ast`.

Nothing is imported to build it. Every ``import`` statement counts wherever it stands: at
module level, inside a function (a lazy import still runs, only later), and under
``if TYPE_CHECKING:`` (a type-only dependency is still a dependency). Relative imports are
resolved, and ``from pkg import name`` is an import of ``pkg.name`` when that is a module,
else of ``pkg``. Used by tests/unit/test_layering.py and tests/unit/protocol/test_isolation.py.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import claudemesh

SRC = Path(claudemesh.__file__).resolve().parent  # src/claudemesh

__all__ = ["SRC", "Import", "imports_of", "module_files", "parse"]


@dataclass(frozen=True, slots=True)
class Import:
    importer: str  # the module holding the statement
    target: str  # the module it imports, fully qualified
    line: int
    lazy: bool  # inside a function body

    def __str__(self) -> str:
        where = "lazily " if self.lazy else ""
        return f"{self.importer}:{self.line} {where}imports {self.target}"


def module_files(package: str = "claudemesh") -> dict[str, Path]:
    """Every module of ``package`` (its ``__init__`` included) found on disk, by name."""
    root = SRC.parent.joinpath(*package.split("."))
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _package_of(module: str, path: Path, level: int) -> str:
    parts = module.split(".")
    keep = len(parts) - level + (1 if path.name == "__init__.py" else 0)
    if keep < 1:
        raise ValueError(f"{path}: a relative import climbs out of the top package")
    return ".".join(parts[:keep])


def imports_of(module: str, path: Path, known: set[str] | None = None) -> list[Import]:
    """Every import in one module's source; ``known`` is the set of module names that
    ``from pkg import name`` may refer to (default: every claudemesh module)."""
    modules = set(module_files()) if known is None else known
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend(Import(module, a.name, child.lineno, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    package = _package_of(module, path, child.level)
                    base = f"{package}.{base}" if base else package
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append(Import(module, sub if sub in modules else base,
                                        child.lineno, lazy))
            function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, lazy or function)

    visit(parse(path), False)
    return found
