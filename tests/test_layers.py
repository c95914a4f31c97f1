"""The layers docs/architecture.md draws, held by the imports: each folder of
``src/sagakit`` imports only from the layers it may use, so the map stays true."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sagakit"

#: What each layer may import from (besides itself). The engine names two adapters on
#: purpose: the in-process transport is a runtime's default.
ALLOWED = {
    "model": {"errors", "clock"},
    "ports": {"errors", "clock", "model"},
    "engine": {"errors", "clock", "model", "ports", "observe", "transports.memory"},
    "stores": {"errors", "clock", "model", "ports", "observe"},
    "transports": {"errors", "clock", "model", "ports", "observe"},
}
#: observe's logs, tracing and redaction use nothing of sagakit's; its metrics read the
#: engine's breakers and the SQL store to export them, so it sits above them.
OBSERVE_BASE = {"logs", "tracing", "redaction"}


def imports(path: Path) -> set[str]:
    """The sagakit modules ``path`` imports, without the ``sagakit.`` prefix."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sagakit."):
            found.add(node.module.removeprefix("sagakit."))
        elif isinstance(node, ast.Import):
            found.update(
                a.name.removeprefix("sagakit.") for a in node.names if a.name.startswith("sagakit.")
            )
    return found


def allowed(layer: str, target: str) -> bool:
    if target.split(".", maxsplit=1)[0] == layer:
        return True
    return any(target == a or target.startswith(f"{a}.") for a in ALLOWED[layer])


def test_each_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for layer in ALLOWED:
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            for target in sorted(imports(path)):
                if not allowed(layer, target):
                    wrong.append(f"{path.relative_to(PACKAGE)} imports sagakit.{target}")
    assert not wrong, "\n".join(wrong)


def test_logs_tracing_and_redaction_import_nothing_of_sagakit_but_each_other() -> None:
    wrong = [
        f"observe/{name}.py imports sagakit.{target}"
        for name in sorted(OBSERVE_BASE)
        for target in sorted(imports(PACKAGE / "observe" / f"{name}.py"))
        if target.removeprefix("observe.") not in OBSERVE_BASE
    ]
    assert not wrong, "\n".join(wrong)
