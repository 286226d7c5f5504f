#!/usr/bin/env python3
"""Checks the module layering of every crate (docs/ARCHITECTURE.md, "Layer rules").

Reads each crate's `src/` and builds the graph of its modules (one per file) from `crate::`,
`super::` and `self::` paths. Fails when:
  - any crate has a module circle (the crate root, which declares the modules, is left out:
    `lib.rs` using a module it declares is not a cycle);
  - in the server: `http/` uses `jobs/` or the reverse; a domain module (a file directly in
    `src/`) uses either; or any module uses an item of `lib.rs` (the crate's face only).

Usage: scripts/check-layers.py [--graph CRATE]   (prints the crate's arrows)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """Removes comments, string and char literals (paths inside them are not imports)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not re.match(r"[A-Za-z0-9_]", text[i - 1])):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            i += len(re.match(r"'(\\.|[^\\'])'", text[i:]).group(0))
        elif c == "'" and re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:i + 12]):
            i += len(re.match(r"'\\u\{[0-9a-fA-F]+\}'", text[i:]).group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def expand_use_tree(prefix: list, tree: str):
    """Paths named by a `use` tree like `a::{b, c::{d, e}}`, each as a list of segments."""
    tree = tree.strip()
    m = re.match(r"^((?:" + IDENT + r"\s*::\s*)*)\{(.*)\}$", tree, re.S)
    if m:
        head = [s for s in re.split(r"\s*::\s*", m.group(1).strip()) if s]
        inner, depth, part = [], 0, ""
        for ch in m.group(2):
            if ch == "," and depth == 0:
                inner.append(part)
                part = ""
                continue
            depth += (ch == "{") - (ch == "}")
            part += ch
        inner.append(part)
        for p in inner:
            if p.strip():
                yield from expand_use_tree(prefix + head, p)
        return
    path = re.split(r"\s+as\s+", tree)[0]
    segs = [s for s in re.split(r"\s*::\s*", path) if s]
    yield prefix + segs


class Crate:
    def __init__(self, src: Path):
        self.src = src
        self.name = src.parent.name
        self.root = "main" if (src / "main.rs").exists() and not (src / "lib.rs").exists() else "lib"
        self.modules = {}  # module path ("" for the root) -> file
        for f in sorted(src.rglob("*.rs")):
            rel = f.relative_to(src).with_suffix("")
            parts = list(rel.parts)
            if parts in (["lib"], ["main"]):
                key = ""
            elif parts[-1] == "mod":
                key = "::".join(parts[:-1])
            else:
                key = "::".join(parts)
            self.modules[key] = f
        self.root_items = set()
        root_text = strip_comments_and_strings(self.modules[""].read_text()) if "" in self.modules else ""
        for m in re.finditer(
            r"^\s*pub(?:\([^)]*\))?\s+(?:async\s+)?(?:fn|struct|enum|trait|type|const|static)\s+(" + IDENT + ")",
            root_text,
            re.M,
        ):
            self.root_items.add(m.group(1))

    def resolve(self, here: str, segs: list):
        """The module a path points into (the longest module prefix), or None if external."""
        if not segs:
            return None
        if segs[0] == "crate":
            base, rest = [], segs[1:]
        elif segs[0] in ("super", "self"):
            base = here.split("::") if here else []
            rest = segs
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    base = base[:-1]
                rest = rest[1:]
        else:
            return None
        path = base + rest
        for k in range(len(path), -1, -1):
            key = "::".join(path[:k])
            if key in self.modules:
                item = path[k] if k < len(path) else None
                return key, item
        return "", None

    def arrows(self):
        """(from module, to module, item) for every path between modules of this crate."""
        for file_module, f in self.modules.items():
            text = strip_comments_and_strings(f.read_text())
            # Inline modules (`mod tests { ... }`): `super` inside them is the file's module.
            inline = []
            for m in re.finditer(r"\bmod\s+(" + IDENT + r")\s*\{", text):
                depth, i = 1, m.end()
                while i < len(text) and depth:
                    depth += (text[i] == "{") - (text[i] == "}")
                    i += 1
                inline.append((m.start(), i, m.group(1)))

            def module_at(pos, file_module=file_module, inline=inline):
                path = file_module.split("::") if file_module else []
                for a, b, name in inline:
                    if a <= pos < b:
                        path = path + [name]
                return "::".join(path)

            here = file_module
            paths = []
            for m in re.finditer(r"\buse\s+((?:crate|super|self)\b[^;]*);", text, re.S):
                paths.extend((m.start(), p) for p in expand_use_tree([], m.group(1)))
            for m in re.finditer(r"\b((?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)", text):
                segs = [s for s in re.split(r"\s*::\s*", m.group(1)) if s]
                if segs[0] == "self" and len(segs) < 2:
                    continue
                paths.append((m.start(), segs))
            for pos, segs in paths:
                if segs[0] == "self" and len(segs) == 1:
                    continue
                r = self.resolve(module_at(pos), segs)
                if r is None:
                    continue
                target, item = r
                if target != here:
                    yield here, target, item


def cycles(nodes, edges):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return out


def layer(module: str) -> str:
    top = module.split("::")[0]
    if module == "":
        return "root"
    return top if top in ("http", "jobs") else "domain"


def check(crate: Crate):
    problems = []
    edges = {}
    seen = set()
    for a, b, item in crate.arrows():
        if b != "":
            edges.setdefault(a, set()).add(b)
        if crate.name == "server" and (a, b, item) not in seen:
            seen.add((a, b, item))
            la, lb = layer(a), layer(b)
            if lb == "root" and la != "root" and item in crate.root_items:
                problems.append(f"server: {a} uses lib.rs's {item}: lib.rs is the crate's face, nothing imports it")
            elif {la, lb} == {"http", "jobs"}:
                problems.append(f"server: {a} uses {b} ({item}): http/ and jobs/ never import each other")
            elif la == "domain" and lb in ("http", "jobs"):
                problems.append(f"server: the domain module {a} uses {b} ({item}): the domain imports neither http/ nor jobs/")
    nodes = [m for m in crate.modules if m != ""]
    for comp in cycles(nodes, {k: {x for x in v if x != ""} for k, v in edges.items() if k != ""}):
        problems.append(f"{crate.name}: module circle: {' <-> '.join(comp)}")
    return problems, edges


def main():
    crates = [Crate(p) for p in sorted((ROOT / "crates").glob("*/src"))]
    if len(sys.argv) == 3 and sys.argv[1] == "--graph":
        for c in crates:
            if c.name == sys.argv[2]:
                for a, bs in sorted(check(c)[1].items()):
                    print(f"{a or 'lib.rs'} -> {', '.join(sorted(b or 'lib.rs' for b in bs))}")
        return 0
    problems = []
    for c in crates:
        problems.extend(check(c)[0])
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        print(f"check-layers: {len(problems)} problem(s); see docs/ARCHITECTURE.md, 'Layer rules'", file=sys.stderr)
        return 1
    print(f"check-layers: {len(crates)} crates, no module circles, server layers hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
