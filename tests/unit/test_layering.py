"""No import runs back up the layers (issue 13; DESIGN's package map, STYLE (b)1).

Every module of ``src/claudemesh`` sits in one layer, and may import only its own layer
and those below. The graph is read from the source with ast (tests/importkit.py): lazy
imports inside functions, and ``TYPE_CHECKING`` ones, count like the rest. A new module
must be given a layer here (the test says so); ``protocol/``'s own stricter rules are
tests/unit/protocol/test_isolation.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from importkit import Import, imports_of, module_files

# Lowest first. An entry names a module or a package (then every module under it); the
# longest matching entry decides.
LAYERS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("protocol", ("claudemesh.protocol",)),
    ("core", ("claudemesh", "claudemesh.errors", "claudemesh.clock", "claudemesh.backoff",
              "claudemesh.config", "claudemesh.crypto", "claudemesh.tls", "claudemesh.privatefs",
              "claudemesh.sqlitedb", "claudemesh.logs", "claudemesh.cork",
              "claudemesh.sending", "claudemesh.liveness", "claudemesh.filecrypt")),
    ("stores", ("claudemesh.daemon.store", "claudemesh.broker.store")),
    ("services", ("claudemesh.daemon", "claudemesh.broker", "claudemesh.direct",
                  "claudemesh.joining")),
    ("daemon api", ("claudemesh.daemon.ipc",)),
    # The daemon's composition root: it wires the stores, the links and the API together.
    ("daemon process", ("claudemesh.daemon.run",)),
    ("sdk", ("claudemesh.sdk",)),
    ("agent", ("claudemesh.agent",)),
    ("cli", ("claudemesh.cli", "claudemesh.__main__")),
)

# Layers that sit side by side and must not lean on each other.
APART: Final = (("claudemesh.daemon", "claudemesh.broker"),)

# Known imports that run up the layers (none today), each to be removed once fixed. The
# test also fails when an entry no longer matches an import, so a fixed one is not forgotten.
KNOWN_UPWARD: Final[frozenset[tuple[str, str]]] = frozenset()

MODULES: Final = module_files()
RANK: Final = {name: rank for rank, (_, names) in enumerate(LAYERS) for name in names}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def layer_of(module: str) -> int | None:
    matches = [name for name in RANK
               if module == name or (name != "claudemesh" and _within(module, name))]
    return RANK[max(matches, key=len)] if matches else None


def internal_imports() -> list[Import]:
    return [imp for name, path in MODULES.items() for imp in imports_of(name, path, set(MODULES))
            if _within(imp.target, "claudemesh") and imp.target != imp.importer]


def _upward(imp: Import) -> bool:
    low, high = layer_of(imp.importer), layer_of(imp.target)
    return low is not None and high is not None and high > low


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_the_layer_map_names_only_modules_that_exist() -> None:
    assert [name for name in RANK if name not in MODULES] == []


def test_no_import_runs_up_the_layers() -> None:
    upward = [imp for imp in internal_imports()
              if _upward(imp) and (imp.importer, imp.target) not in KNOWN_UPWARD]
    names = {rank: name for rank, (name, _) in enumerate(LAYERS)}
    assert [f"{imp} ({names[layer_of(imp.importer) or 0]} -> "
            f"{names[layer_of(imp.target) or 0]})" for imp in upward] == []


def test_every_known_exception_is_still_an_upward_import() -> None:
    seen = {(imp.importer, imp.target) for imp in internal_imports() if _upward(imp)}
    assert sorted(KNOWN_UPWARD - seen) == [], "fixed: remove it from KNOWN_UPWARD"


def test_sibling_services_do_not_import_each_other() -> None:
    crossing = [str(imp) for imp in internal_imports() for a, b in APART
                if (_within(imp.importer, a) and _within(imp.target, b))
                or (_within(imp.importer, b) and _within(imp.target, a))]
    assert crossing == []


def test_the_reading_counts_lazy_type_only_and_relative_imports(tmp_path: Path) -> None:
    # The test is only as good as its reading of the source.
    source = tmp_path / "fake.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from claudemesh.daemon import store\n"
        "from . import link as _link\n"
        "from ..cli.output import PRINTER\n"
        "if TYPE_CHECKING:\n"
        "    from claudemesh.sdk import Client\n"
        "def later() -> None:\n"
        "    import claudemesh.agent.hooks\n", encoding="utf-8")
    got = [(i.target, i.line, i.lazy) for i in imports_of("claudemesh.daemon.fake", source,
                                                         set(MODULES))]
    assert got == [("typing", 1, False), ("claudemesh.daemon.store", 2, False),
                   ("claudemesh.daemon.link", 3, False), ("claudemesh.cli.output", 4, False),
                   ("claudemesh.sdk", 6, False), ("claudemesh.agent.hooks", 8, True)]
