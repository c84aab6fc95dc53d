"""The tree's layers: a module imports only from its own layer or the layers below it.

schemas < connectors < pipelines.core < pipelines.dedup, pipelines.teacher < pipelines.prompts < pipelines.stages
< pipelines.engines, pipelines.release < pipelines.recipes < the commands (build, refresh, publish, llama, train, cli).
So `connectors` imports nothing from `pipelines`, `dedup` (a library) no stage, a stage no recipe, and the core
knows no stage, teacher or recipe by name. `python tests/test_layers.py DIR` counts the upward imports of a tree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [  # (module prefix, rank): the longest matching prefix decides
    ("schemas", 0), ("connectors", 1), ("pipelines.core", 2), ("pipelines.data", 2), ("pipelines.dedup", 3),
    ("pipelines.teacher", 3), ("pipelines.tools", 3), ("pipelines.prompts", 4), ("pipelines.stages", 5), ("pipelines.release", 6),
    ("pipelines.engines", 6),
    ("pipelines.recipes", 7), ("pipelines", 8),
]


def rank(module: str) -> int | None:
    if module == "pipelines":  # the package itself holds only __version__
        return 0
    matches = [(len(p), r) for p, r in LAYERS if module == p or module.startswith(p + ".")]
    return max(matches)[1] if matches else None


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> set[str]:
    """Every project module `path` imports, at any depth of the file (a lazy import counts too)."""
    here = module_name(path, root)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = here.split(".")[: -node.level + (path.name == "__init__.py")] if node.level else []
                base = ".".join([*package, base] if base else package)
            out.update(f"{base}.{a.name}" if (root / f"{base}.{a.name}".replace(".", "/")).with_suffix(".py").exists()
                       or (root / f"{base}.{a.name}".replace(".", "/")).is_dir() else base for a in node.names)
    return {m for m in out if rank(m) is not None}


def upward_imports(root: Path = ROOT, rename: dict[str, str] | None = None) -> list[str]:
    """`importer -> imported` for every import of a higher layer; `rename` maps old module names onto the layers
    (to count a tree from before the layers existed)."""
    rename = rename or {}
    def placed(m):
        return next((new + m[len(old):] for old, new in sorted(rename.items(), key=lambda kv: -len(kv[0]))
                     if m == old or m.startswith(old + ".")), m)
    edges = []
    for top in ("schemas", "connectors", "pipelines"):
        for path in sorted((root / top).rglob("*.py")):
            importer = module_name(path, root)
            for imported in sorted(imports(path, root)):
                if rank(placed(imported)) > rank(placed(importer)):
                    edges.append(f"{importer} -> {imported}")
    return edges


def test_no_module_imports_a_higher_layer():
    assert upward_imports() == []


def test_connectors_import_nothing_from_pipelines():
    for path in (ROOT / "connectors").rglob("*.py"):
        assert not any(m.startswith("pipelines") for m in imports(path, ROOT)), path


if __name__ == "__main__":
    edges = upward_imports(Path(sys.argv[1]) if sys.argv[1:] else ROOT)
    print("\n".join(edges))
    print(f"{len(edges)} upward imports")


def test_no_script_folder_shadows_a_standard_module():
    """bench/ and tests/ go on sys.path (bench scripts, fuzz workers): a `select.py` there broke `subprocess`."""
    for folder in ("bench", "tests"):
        names = {p.stem for p in (ROOT / folder).glob("*.py")}
        assert not names & set(sys.stdlib_module_names), (folder, names & set(sys.stdlib_module_names))
