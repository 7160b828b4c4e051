"""The daemon's layers, as its folders show them: a module imports only from its own folder and
the folders below it, and only the control socket's layer (`service/`) knows the wire format.
Read from the source (every import, deferred and TYPE_CHECKING ones included), so a shortcut
that would draw a circle fails here before it is used."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parent.parent / "daemon" / "updaterd"
# bottom to top. The top folder holds the ground every layer stands on, and the entry points
# that start everything (above all folders); each folder is a layer of its own.
ENTRY = {"cli", "publishing", "__main__"}
FOLDERS = ["trust", "host", "net", "sources", "install", "engine", "release", "service"]
LAYERS = ["(ground)", *FOLDERS, "(entry)"]


def layer_of(module: str) -> str:
    """`updaterd.install.layout` -> "install"; `updaterd.errors` -> "(ground)"."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in FOLDERS):
        return parts[1]
    return "(entry)" if parts[-1] in ENTRY else "(ground)"


def rank(module: str) -> int:
    return LAYERS.index(layer_of(module))


def imports(path: Path) -> list[str]:
    """The updaterd and updaterctl modules `path` imports (a name imported from a package is
    a module of it when such a file exists)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module
            for alias in node.names:
                sub = DAEMON.parent / Path(*f"{base}.{alias.name}".split("."))
                is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
                found.append(f"{base}.{alias.name}" if is_module else base)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return [m for m in found if m.split(".")[0] in ("updaterd", "updaterctl")]


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(DAEMON.rglob("*.py")):
        rel = path.relative_to(DAEMON.parent).with_suffix("")
        out.append((".".join(rel.parts).removesuffix(".__init__"), path))
    return out


def test_the_layers_are_the_folders_there_are() -> None:
    folders = {p.name for p in DAEMON.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(FOLDERS)


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_no_module_imports_from_a_layer_above_its_own(module: str, path: Path) -> None:
    above = [m for m in imports(path)
             if m.startswith("updaterd.") and rank(m) > rank(module)]
    assert not above, f"{module} ({layer_of(module)}) imports from above: {above}"


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_only_the_control_sockets_layer_knows_the_wire(module: str, path: Path) -> None:
    wire = [m for m in imports(path) if m.startswith("updaterctl.protocol")]
    assert not wire or layer_of(module) == "service", f"{module} imports the wire: {wire}"


def test_the_engines_reports_reach_the_wire_whole() -> None:
    """The engine's own types and the wire's carry the same fields, and `answers` converts
    each: a field added on one side only would be dropped at the socket, silently."""
    import dataclasses

    from updaterctl import protocol
    from updaterd import reports
    from updaterd.service import answers

    pairs = [(reports.Event, protocol.Event, answers.event,
              reports.Event(app="a", kind="error", phase="failed", message="m", version="1.0.0",
                            done=1, total=2, at=3.0, outcome="failed", step="staging",
                            plan="delta")),
             (reports.Checked, protocol.CheckResult, answers.checked,
              reports.Checked(current="1", available="2", checked_at=3.0,
                              passed_over={"3": "pinned"})),
             (reports.Updated, protocol.UpdateResult, answers.updated,
              reports.Updated(from_version="1", to_version="2", result="deferred", reason="r")),
             (reports.RolledBack, protocol.RollbackResult, answers.rolled_back,
              reports.RolledBack(from_version="2", to_version="1", forward=True))]
    for ours, wire, convert, sample in pairs:
        names = [f.name for f in dataclasses.fields(ours)]
        assert names == list(wire.__struct_fields__), ours
        converted = convert(sample)
        assert {n: getattr(converted, n) for n in names} == dataclasses.asdict(sample)
    assert reports.Updated(from_version="1", to_version="2", result="installed").describe("a") \
        == protocol.UpdateResult(from_version="1", to_version="2",
                                 result="installed").describe("a")
