"""Architecture rules checked statically over the source of every Python package in the repo.

* No import cycle anywhere: the module import graph of all packages together, function-level
  imports included (a cycle hidden in a function still breaks whichever module is imported
  first, and it still means two modules cannot be understood apart).
* ``openhelix_core`` stays pure Python: it imports no ROS package at all.

Packages are found the way colcon finds them (a folder with ``setup.py`` or ``package.xml``,
hidden folders and folders holding ``COLCON_IGNORE`` skipped), so a package added later is
checked without editing this file. Nothing is imported: the sources are parsed with ``ast``.
"""
from __future__ import annotations

import ast
import os
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

#: Packages that must be found; guards against a discovery that silently finds nothing.
EXPECTED_PACKAGES = {"openhelix_core", "openhelix_ros"}
#: Name endings of ROS interface packages (messages, services, actions), by ROS convention.
ROS_INTERFACE_SUFFIXES = ("_msgs", "_srvs", "_interfaces")


def repository_root() -> Path:
    """The nearest folder above this file that holds ``.git``, wherever the test lives."""
    for folder in Path(__file__).resolve().parents:
        if (folder / ".git").exists():
            return folder
    raise RuntimeError(f"{__file__} is not inside a git repository")


def package_folders(root: Path) -> list[Path]:
    """Folders holding a ``setup.py`` or ``package.xml``, as colcon discovers them."""
    found = []
    for folder, subfolders, files in os.walk(root):
        if "COLCON_IGNORE" in files:
            subfolders.clear()
            continue
        if "setup.py" in files or "package.xml" in files:
            found.append(Path(folder))
            subfolders.clear()  # colcon does not look for packages inside a package
            continue
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
    return sorted(found)


@dataclass
class ImportGraph:
    """Modules of the repo's Python packages and what each imports.

    An import of ``a.b.c`` is an edge to ``a.b.c`` only, not to the packages ``a`` and ``a.b``
    whose ``__init__`` it also runs: a package that re-exports its submodules would otherwise
    be in a cycle with every submodule that imports a sibling. ``from a.b import name`` is an
    edge to ``a.b.name`` when that is a module, else to ``a.b``.

    Attributes:
        files: dotted module name -> source file (``pkg.sub`` for ``pkg/sub/__init__.py``).
        edges: module -> {imported module of the repo -> line of the first such import}.
        external: module -> top-level names of imported modules outside the repo.
    """

    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, int]] = field(default_factory=dict)
    external: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of_packages(cls, folders: list[Path]) -> ImportGraph:
        graph = cls()
        for folder in folders:
            for init in sorted(folder.glob("*/__init__.py")):
                for source in sorted(init.parent.rglob("*.py")):
                    parts = source.relative_to(folder).with_suffix("").parts
                    graph.files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = source
        for module, source in graph.files.items():
            graph._add_imports(module, source)
        return graph

    def _add_imports(self, module: str, source: Path) -> None:
        edges, external = self.edges.setdefault(module, {}), self.external.setdefault(module, set())
        for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
            for target in self._targets(module, source, node):
                known = self._longest_known_prefix(target)
                if known is None:
                    external.add(target.split(".")[0])
                elif known != module:
                    edges.setdefault(known, node.lineno)

    def _targets(self, module: str, source: Path, node: ast.AST) -> list[str]:
        """Dotted names of the modules an import statement loads."""
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if not isinstance(node, ast.ImportFrom):
            return []
        if node.level:
            package = module.split(".") if source.name == "__init__.py" else module.split(".")[:-1]
            base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module
        # ``from package import name`` loads the submodule ``package.name`` when there is one.
        return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.files else base for alias in node.names]

    def _longest_known_prefix(self, name: str) -> str | None:
        parts = name.split(".")
        while parts and ".".join(parts) not in self.files:
            parts.pop()
        return ".".join(parts) if parts else None

    def cyclic_groups(self) -> list[set[str]]:
        """Groups of modules that import each other, directly or not (Tarjan's strongly
        connected components with more than one module)."""
        order: dict[str, int] = {}
        lowest: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        groups: list[set[str]] = []

        def visit(module: str) -> None:
            order[module] = lowest[module] = len(order)
            stack.append(module)
            on_stack.add(module)
            for imported in sorted(self.edges[module]):
                if imported not in order:
                    visit(imported)
                    lowest[module] = min(lowest[module], lowest[imported])
                elif imported in on_stack:
                    lowest[module] = min(lowest[module], order[imported])
            if lowest[module] == order[module]:
                group = set()
                while module not in group:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.add(member)
                if len(group) > 1:
                    groups.append(group)

        for module in sorted(self.edges):
            if module not in order:
                visit(module)
        return groups

    def shortest_cycle(self, start: str, group: set[str]) -> list[str]:
        """The shortest import path from ``start`` back to itself inside ``group`` (breadth first)."""
        came_from: dict[str, str] = {}
        frontier = [start]
        while frontier:
            following = []
            for module in frontier:
                for imported in sorted(self.edges[module]):
                    if imported not in group or imported in came_from:
                        continue
                    came_from[imported] = module
                    if imported == start:
                        path = [start]
                        while len(path) == 1 or path[-1] != start:
                            path.append(came_from[path[-1]])
                        return path[::-1]
                    following.append(imported)
            frontier = following
        raise AssertionError(f"{start} is in a strongly connected group but on no cycle")

    def describe(self, cycle: list[str], root: Path) -> str:
        """``a (a.py:12) -> b (b.py:3) -> a``: each module with the line that imports the next."""
        steps = [f"{module} ({self.files[module].relative_to(root)}:{self.edges[module][following]})"
                 for module, following in zip(cycle, cycle[1:])]
        return " -> ".join(steps + [cycle[-1]])


def ros_dependencies(folders: list[Path]) -> set[str]:
    """Every package any ``package.xml`` of the repo depends on, plus the repo's own packages.

    The manifests must declare every ROS package their code imports
    (``tests/openhelix_bringup/test_package_manifests.py``), so this holds every ROS package the repo uses;
    rosdep keys of plain Python libraries (``python3-numpy``) are never module names.
    """
    names = set()
    for manifest in (folder / "package.xml" for folder in folders):
        if manifest.is_file():
            tree = ElementTree.parse(manifest)
            names.add(tree.findtext("name").strip())
            names.update(element.text.strip() for element in tree.iter() if element.tag.endswith("depend"))
    return names


ROOT = repository_root()
PACKAGE_FOLDERS = package_folders(ROOT)
GRAPH = ImportGraph.of_packages(PACKAGE_FOLDERS)


def test_every_package_is_found():
    found = {module for module in GRAPH.files if "." not in module}
    assert EXPECTED_PACKAGES <= found, f"package discovery found only {sorted(found)}"


def test_no_import_cycles():
    found = []
    for group in GRAPH.cyclic_groups():
        cycle = GRAPH.shortest_cycle(min(group), group)
        others = sorted(group - set(cycle))
        found.append(GRAPH.describe(cycle, ROOT) + (f"\n    (in the same tangle: {', '.join(others)})" if others else ""))
    assert not found, "import cycle(s), function-level imports included:\n  " + "\n  ".join(found)


def test_core_never_imports_ros():
    ros = (ros_dependencies(PACKAGE_FOLDERS) | {"rclpy"}) - {"openhelix_core"}
    offenders = {
        f"{module} imports {name}"
        for module, names in GRAPH.external.items() if module.split(".")[0] == "openhelix_core"
        for name in names if name in ros or name.endswith(ROS_INTERFACE_SUFFIXES)
    }
    offenders |= {f"{module} imports {imported}"
                  for module, edges in GRAPH.edges.items() if module.split(".")[0] == "openhelix_core"
                  for imported in edges if imported.split(".")[0] in ros}
    assert not offenders, "openhelix_core must stay free of ROS:\n  " + "\n  ".join(sorted(offenders))


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "demo_pkg"
    (package / "demo").mkdir(parents=True)
    (package / "setup.py").write_text("")
    (package / "demo" / "__init__.py").write_text("")
    (package / "demo" / "loader.py").write_text("from .model import Model\n")
    (package / "demo" / "model.py").write_text("def load():\n    from . import loader\n    return loader\n")
    graph = ImportGraph.of_packages(package_folders(tmp_path))
    assert graph.cyclic_groups() == [{"demo.loader", "demo.model"}]
    cycle = graph.shortest_cycle("demo.loader", {"demo.loader", "demo.model"})
    assert graph.describe(cycle, tmp_path) == \
        "demo.loader (demo_pkg/demo/loader.py:1) -> demo.model (demo_pkg/demo/model.py:2) -> demo.loader"
