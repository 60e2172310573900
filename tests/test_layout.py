"""The code base's shape, as the README and the developers' guide promise it: options declared
once and documented as declared, the client standing on the protocol package alone, no import
circles (not even through imports for type checking), and no close decided by the words of its
reason."""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import Field
from pathlib import Path
from typing import Any

from chat_server.ops.settings import default_text, env_name, flag, how, is_switch, options
from chat_tui.config import Config, config_keys, explain

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PACKAGES = ("chat_protocol", "chat_server", "chat_tui")


def _table_after(header: str) -> list[str]:
    """The rows of the Markdown table whose header row is ``header``."""
    lines = README.splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return rows


def _option_cell(f: Field[Any]) -> str:
    if is_switch(f):
        return f"`--{flag(f)}` / `--no-{flag(f)}`"
    metavar = how(f).metavar
    return f"`--{flag(f)}{' ' + metavar if metavar else ''}`"


def _default_cell(f: Field[Any]) -> str:
    return how(f).default_text or f"`{default_text(f)}`"


def test_the_readme_option_table_is_the_settings_declared() -> None:
    expected = [
        f"| {_option_cell(f)} | {_default_cell(f)} | {how(f).help} |"
        for f in options()
        if how(f).cli
    ]
    found = _table_after("| option | default | meaning |")
    assert found == expected, "README's option table should read:\n" + "\n".join(expected)


def test_the_readme_environment_only_table_is_the_settings_declared() -> None:
    expected = [
        f"| `{env_name(f)}` | `{default_text(f)}` | {how(f).help} |"
        for f in options()
        if not how(f).cli
    ]
    found = _table_after("| variable | default | meaning |")
    assert found == expected, "README's environment table should read:\n" + "\n".join(expected)


def test_the_readme_config_block_is_the_config_declared() -> None:
    block = README.split("```toml\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert [line.split("=", 1)[0].strip() for line in lines] == [f.name for f in config_keys()]
    example = tomllib.loads(block)
    for line, f in zip(lines, config_keys(), strict=True):
        comment = line.split(" # ", 1)[1].strip() if " # " in line else ""
        assert comment == explain(f).doc, f"README's comment on {f.name}"
        if f.name != "rooms":  # the README shows two rooms, as an example of the list
            assert example[f.name] == getattr(Config(), f.name), f"README's default of {f.name}"


# --- imports ---------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever: at the top, inside functions, and for type
    checking only (a circle of those is still two modules that cannot be read apart)."""
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                assert package is not None
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    graph = {}
    for name, path in modules.items():
        imported = _imports(path)
        # Importing a.b.c runs a/__init__ and a/b/__init__ first (unless they are this
        # module's own packages, being imported already).
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        imported |= {".".join(m.split(".")[:i]) for m in imported for i in range(1, m.count("."))}
        graph[name] = {m for m in imported - own if m in modules and m != name}
    return graph


def test_there_are_no_import_circles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_client_stands_on_the_protocol_package_alone() -> None:
    for path in (ROOT / "chat_tui").rglob("*.py"):
        imported = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
        ]
        names = [a.name for n in imported if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in imported if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.split(".")[0] == "chat_server"], path


def test_no_close_is_decided_by_the_words_of_its_reason() -> None:
    # Closes are values (chat_protocol.close); only its own table reads a reason back.
    pattern = re.compile(r"\bin\s+\w*reason\b|\breason\w*\.(startswith|endswith|find)\(")
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_protocol_md_lists_every_close() -> None:
    from chat_protocol import close

    rows = (ROOT / "docs" / "protocol.md").read_text().split("### Every close", 1)[1]
    for entry in close.TABLE:
        reason = f"`{entry.reason.replace('{}', '...')}`" if entry.reason else "(none)"
        assert f"| {int(entry.code)} | {reason} |" in rows, entry
