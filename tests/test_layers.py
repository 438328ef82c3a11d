"""The house's import rule, checked on the source: each floor imports only the floors below it.

    cli, __main__, __init__          may import anything of recpack
    measure                          format, storage, jpeg, pack, read, the ground floor
    pack | read                      format, storage, jpeg, the ground floor -- and never each other
    jpeg                             format, storage, the ground floor
    storage                          format, the ground floor
    format                           the ground floor; of other libraries only numpy, crc32c, lmdb
    errors, prefetch, processes, _version   (the ground floor) nothing of recpack

Function-level imports count as well: a lazy import across the rule is still a crossing.
"""

import ast
import functools
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recpack"
GROUND = {"errors", "prefetch", "processes", "_version"}
ALLOWED = {
    "format": {"format"} | GROUND,
    "storage": {"storage", "format"} | GROUND,
    "jpeg": {"jpeg", "storage", "format"} | GROUND,
    "pack": {"pack", "jpeg", "storage", "format"} | GROUND,
    "read": {"read", "jpeg", "storage", "format"} | GROUND,
    "measure": {"measure", "read", "pack", "jpeg", "storage", "format"} | GROUND,
    **{name: set() for name in GROUND},
}
FORMAT_THIRD_PARTY = {"numpy", "crc32c", "lmdb"}


@functools.cache
def modules() -> dict[str, Path]:
    """Dotted module name (without 'recpack.') -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports_of(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(recpack modules, other top-level packages) that a module imports anywhere in its body."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name.split(".")
                (ours.add(".".join(target[1:])) if target[0] == "recpack" else others.add(target[0]))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            elif node.module.split(".")[0] == "recpack":
                target = node.module.split(".")[1:]
            else:
                others.add(node.module.split(".")[0])
                continue
            module = ".".join(target)
            # "from .x import y" may name a submodule y: count it as the deeper module when one exists
            for alias in node.names:
                deeper = f"{module}.{alias.name}" if module else alias.name
                ours.add(deeper if deeper in modules() else module)
    return ours, others


def floor(module: str) -> str:
    return module.split(".")[0] if module else ""


def test_every_import_stays_on_its_floor_or_goes_down():
    crossings = []
    for name, path in modules().items():
        rule = ALLOWED.get(floor(name))
        if rule is None:  # cli, __main__, the package's __init__: the top floor
            continue
        ours, _ = imports_of(name, path)
        crossings += [f"{name} imports {target}" for target in sorted(ours) if floor(target) not in rule]
    assert crossings == []


def test_format_uses_no_library_but_numpy_crc32c_and_lmdb():
    extra = set()
    for name, path in modules().items():
        if floor(name) == "format":
            extra |= imports_of(name, path)[1] - FORMAT_THIRD_PARTY - set(sys.stdlib_module_names) - {"__future__"}
    assert extra == set()


def test_no_import_cycles():
    graph = {name: {t for t in imports_of(name, path)[0] if t in modules() and t != name}
             for name, path in modules().items()}
    graph.pop("", None)  # the package's __init__ imports lazily, from inside a function
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node, trail):
        state[node] = 1
        for target in graph.get(node, ()):
            assert state.get(target) != 1, f"import cycle: {' -> '.join(trail + [node, target])}"
            if target not in state:
                visit(target, trail + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_storage_sits_above_format_and_below_the_rest():
    """format never imports storage (the contract is storage-free); storage imports nothing above it."""
    assert "storage" not in ALLOWED["format"]
    assert ALLOWED["storage"] == {"storage", "format"} | GROUND
    assert all("storage" in ALLOWED[floor_] for floor_ in ("jpeg", "pack", "read", "measure"))


def test_the_rule_sees_a_crossing_when_there_is_one(tmp_path, monkeypatch):
    """The checker itself: a pack module that imports read is reported."""
    fake = tmp_path / "recpack" / "pack"
    fake.mkdir(parents=True)
    (fake / "sneaky.py").write_text("def f():\n    from ..read.dataset import RecordDataset\n")
    ours, _ = imports_of("pack.sneaky", fake / "sneaky.py")
    assert "read.dataset" in ours and floor("read.dataset") not in ALLOWED["pack"]


def test_packing_reading_planning_and_measuring_never_import_torch():
    """Only read/dataset.py imports torch: the rest runs where torch is missing or slow to load."""
    names = [f"recpack.{name}" for name in modules() if name and not name.endswith("dataset") and name != "__main__"]
    code = f"import sys; import {', '.join(names)}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
