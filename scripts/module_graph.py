#!/usr/bin/env python3
"""Prints the crate's module dependency graph and fails on a cycle.

A module depends on another when its non-test code names `crate::other` (a `use` or a
path). Top-level modules (`src/<m>.rs`, `src/<m>/`) are checked, and, inside each module
directory, its files (a child naming `super::sibling` or `crate::<m>::sibling`). Test code
(`#[cfg(test)]` modules at the end of a file) is left out: tests may reach anywhere.

Usage: scripts/module_graph.py [--quiet]
"""
import pathlib
import re
import sys

SRC = pathlib.Path(__file__).resolve().parent.parent / "src"


def non_test(text):
    """The code of a file without its test module, comments and doc comments."""
    cut = text.find("#[cfg(test)]\nmod ")
    text = text if cut < 0 else text[:cut]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def named(text, prefix):
    """Names reached through `prefix::name` or `prefix::{a, b::c}`."""
    names = set(re.findall(rf"\b{prefix}::(\w+)", text))
    for group in re.findall(rf"\b{prefix}::\{{([^}}]*)\}}", text, flags=re.S):
        names |= {part.strip().split("::")[0] for part in group.split(",") if part.strip()}
    return names


def top_modules():
    names = set()
    for path in SRC.iterdir():
        if path.is_dir():
            names.add(path.name)
        elif path.suffix == ".rs" and path.stem not in ("lib", "main"):
            names.add(path.stem)
    return names


def files_of(module):
    single = SRC / f"{module}.rs"
    if single.exists():
        return [single]
    return sorted((SRC / module).rglob("*.rs"))


def find_cycle(graph):
    state = {}
    stack = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def main():
    quiet = "--quiet" in sys.argv
    modules = top_modules()
    graph = {}
    for module in sorted(modules):
        deps = set()
        for path in files_of(module):
            for name in named(non_test(path.read_text()), "crate"):
                if name in modules and name != module:
                    deps.add(name)
        graph[module] = deps
    failures = []
    cycle = find_cycle(graph)
    if cycle:
        failures.append("modules: " + " → ".join(cycle))
    # Files inside each module directory.
    for module in sorted(modules):
        folder = SRC / module
        if not folder.is_dir():
            continue
        files = {p.stem: p for p in folder.glob("*.rs") if p.stem != "mod"}
        inner = {}
        for stem, path in files.items():
            text = non_test(path.read_text())
            names = named(text, "super") | named(text, f"crate::{module}")
            inner[stem] = {n for n in names if n in files and n != stem}
        cycle = find_cycle(inner)
        if cycle:
            failures.append(f"{module}/: " + " → ".join(cycle))
        if not quiet:
            for stem in sorted(inner):
                if inner[stem]:
                    print(f"  {module}/{stem} → {', '.join(sorted(inner[stem]))}")
    if not quiet:
        for module in sorted(graph):
            print(f"{module} → {', '.join(sorted(graph[module])) or '-'}")
    for failure in failures:
        print(f"cycle: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
