"""The floor plan's limits, checked: ``python -m deployctl.devtools.floorplan``.

Prints every function (outside a click command) that takes more than :data:`MAX_PARAMETERS` parameters,
every module over :data:`MAX_LINES` lines, every ``getattr``/``hasattr`` probe in the packages that must
use protocols instead (:data:`NO_PROBES`), and every import cycle between deployctl's modules; then the
largest modules and functions for scale. Exits 1 when something is over a limit, else 0. The layers
themselves are checked by ``lint-imports`` (.importlinter).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator, Mapping, Set
from dataclasses import dataclass
from pathlib import Path

MAX_PARAMETERS = 8  # a function taking more wants an options object (STYLE.md: options travel as one value)
MAX_LINES = 450  # a module longer than this answers more than one question
NO_PROBES = ("deployctl.app", "deployctl.reconcile", "deployctl.controller")  # protocols, not getattr probes

PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Function:
    module: str
    name: str  # qualified within the module (Class.method)
    line: int
    parameters: int


@dataclass(frozen=True)
class Probe:
    module: str
    line: int
    call: str  # getattr or hasattr


@dataclass(frozen=True)
class Report:
    functions: tuple[Function, ...]  # every function, with its parameter count
    sizes: Mapping[str, int]  # module -> lines
    probes: tuple[Probe, ...]
    cycles: tuple[tuple[str, ...], ...]

    @property
    def too_many_parameters(self) -> list[Function]:
        return [f for f in self.functions if f.parameters > MAX_PARAMETERS]

    @property
    def too_long(self) -> dict[str, int]:
        return {m: n for m, n in self.sizes.items() if n > MAX_LINES}

    @property
    def ok(self) -> bool:
        return not (self.too_many_parameters or self.too_long or self.probes or self.cycles)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_click_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with ``click.command``/``group`` (or ``some_group.command(...)``): click passes each
    option as a parameter, so the limit does not apply."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            return True
    return False


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef, *, method: bool) -> int:
    """Every parameter a caller may pass (``*args`` and ``**kwargs`` count one each); not ``self``/``cls``."""
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
    if method and not static and (args.posonlyargs or args.args):
        count -= 1
    return count


def functions(tree: ast.Module, module: str) -> Iterator[Function]:
    def walk(body: Iterable[ast.stmt], prefix: str, in_class: bool) -> Iterator[Function]:
        for node in body:
            if isinstance(node, ast.ClassDef):
                yield from walk(node.body, f"{prefix}{node.name}.", True)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not _is_click_command(node):
                    yield Function(module, prefix + node.name, node.lineno, parameter_count(node, method=in_class))
                yield from walk(node.body, f"{prefix}{node.name}.", False)

    yield from walk(tree.body, "", False)


def probes(tree: ast.Module, module: str) -> Iterator[Probe]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            yield Probe(module, node.lineno, node.func.id)


def cycles(imports: Mapping[str, Set[str]]) -> list[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan): the import cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(imports.get(node, ())):
            if nxt not in imports:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(tuple(sorted(component)))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def import_graph(package: str = "deployctl") -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import statement, also inside a function)."""
    import grimp  # a development tool (import-linter's graph): imported only here

    graph = grimp.build_graph(package)
    modules = {m for m in graph.modules if m == package or m.startswith(f"{package}.")}
    return {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}


def survey(root: Path = PACKAGE, *, graph: Mapping[str, Set[str]] | None = None) -> Report:
    found: list[Function] = []
    sizes: dict[str, int] = {}
    probed: list[Probe] = []
    for path in sorted(root.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        module = module_name(path, root)
        tree = ast.parse(source, filename=str(path))
        sizes[module] = len(source.splitlines())
        found.extend(functions(tree, module))
        if module.startswith(NO_PROBES):
            probed.extend(probes(tree, module))
    return Report(functions=tuple(found), sizes=sizes, probes=tuple(probed),
                  cycles=tuple(cycles(graph if graph is not None else import_graph(root.name))))


def render(report: Report, *, top: int = 5) -> str:
    lines = [f"parameters (limit {MAX_PARAMETERS}, click commands excepted):"]
    lines += [f"  OVER {f.parameters:3d}  {f.module}:{f.line} {f.name}" for f in report.too_many_parameters]
    largest = sorted(report.functions, key=lambda f: -f.parameters)[:top]
    lines += [f"       {f.parameters:3d}  {f.module}:{f.line} {f.name}" for f in largest if f.parameters <= MAX_PARAMETERS]
    lines.append(f"module sizes (limit {MAX_LINES} lines), of {len(report.sizes)} modules:")
    lines += [f"  OVER {n:4d}  {m}" for m, n in sorted(report.too_long.items(), key=lambda kv: -kv[1])]
    lines += [f"       {n:4d}  {m}" for m, n in sorted(report.sizes.items(), key=lambda kv: -kv[1])[:top]
              if n <= MAX_LINES]
    lines.append(f"getattr/hasattr probes in {', '.join(NO_PROBES)}: {len(report.probes)}")
    lines += [f"  OVER  {p.module}:{p.line} {p.call}" for p in report.probes]
    lines.append(f"import cycles: {len(report.cycles)}")
    lines += [f"  OVER  {' <-> '.join(c)}" for c in report.cycles]
    lines.append("ok: within every limit" if report.ok else "FAILED: over a limit (see OVER above)")
    return "\n".join(lines)


def main() -> int:
    report = survey()
    sys.stdout.write(render(report) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
