"""The import policy: hygiene for models, not a boundary (the container is the boundary, and code
can always reach a module by other means)."""

import ast

from .text import syntax_error_info

MAX_FLAGGED = 100  # imports named in a report


def module_matches(name, entries):
    """An entry covers itself and its submodules: http.client covers http.client.x."""
    return any(name == e or name.startswith(e + ".") for e in entries)


def flagged_imports(source, policy):
    """Imports of the code that the policy flags, from its syntax tree, in source order.

    Seen: `import m`, `from m import x` (as m.x), and `__import__("m")` or
    `importlib.import_module("m")` with a literal name. A safe entry wins over a dangerous one."""
    dangerous = [str(m) for m in policy.get("dangerous") or []]
    safe = [str(m) for m in policy.get("safe") or []]
    try:
        tree = ast.parse(source, "main.py")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    found, seen = [], set()

    def check(name, shown, node):
        if module_matches(name, dangerous) and not module_matches(name, safe) and (shown, node.lineno) not in seen:
            seen.add((shown, node.lineno))
            found.append({"module": shown[:200], "line": node.lineno, "column": node.col_offset + 1})

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                check(alias.name, alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for alias in node.names:
                name = node.module if alias.name == "*" else node.module + "." + alias.name
                check(name, node.module if module_matches(node.module, dangerous) else name, node)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == "__import__") or (isinstance(f, ast.Attribute) and f.attr == "import_module"):
                check(node.args[0].value, node.args[0].value, node)
    found.sort(key=lambda f: (f["line"], f["column"]))
    return found[:MAX_FLAGGED]


def check_imports(source, policy):
    """(flagged, blocked): warn mode gives the flagged imports for the report; block mode gives the
    error that fails validation (None when nothing is blocked)."""
    if not policy or policy.get("mode") not in ("warn", "block"):
        return [], None
    found = flagged_imports(source, policy)
    if not found or policy["mode"] == "warn":
        return [{"module": f["module"], "line": f["line"]} for f in found], None
    first = found[0]
    message = "this server's import policy blocks " + ", ".join(
        "%s (line %d)" % (f["module"], f["line"]) for f in found)
    lines = source.decode("utf-8", "replace").splitlines()
    text = lines[first["line"] - 1] if first["line"] <= len(lines) else ""
    info = syntax_error_info(SyntaxError(message, ("main.py", first["line"], first["column"], text)))
    info["type"] = "ImportPolicyError"
    return [], info
