"""The layout's one-way rule (DESIGN.md): dependencies point down the list
data <- training <- rl <- explain <- serving <- cluster; no folder imports from one above it.
Every import counts, including those inside functions (they are still dependencies)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORDER = ("data", "training", "rl", "explain", "serving", "cluster")
# (importing module, imported folder): each with its reason, so that the list stays short and deliberate.
EXCEPTIONS = {
    # The registry (training/) validates every card, and the allocator card carries the typed
    # environment config (rl/config.py, plain pydantic over data/) it was trained with.
    ("rayfolio.training.cards", "rl"),
    # The jobs routes submit the CLI's commands and validate a run config against the CLI's typed
    # RunConfig (cluster/config.py, plain pydantic over the data, training and rl configs) before submission.
    ("rayfolio.serving.jobs", "cluster"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.startswith("rayfolio.")}


def test_no_folder_imports_from_a_folder_above_it():
    upward = []
    for rank, folder in enumerate(ORDER):
        for path in sorted((REPO / folder).rglob("*.py")):
            module = ".".join(("rayfolio", *path.relative_to(REPO).with_suffix("").parts))
            for imported in _imports(path):
                target = imported.split(".")[1]
                if target in ORDER and ORDER.index(target) > rank and (module, target) not in EXCEPTIONS:
                    upward.append(f"{module} imports {imported}")
    assert not upward, "imports against the layout's direction:\n" + "\n".join(upward)


def test_every_exception_is_still_needed():
    for module, target in EXCEPTIONS:
        path = REPO.joinpath(*module.split(".")[1:]).with_suffix(".py")
        assert any(i.split(".")[1] == target for i in _imports(path)), f"{module} no longer imports {target}: drop it"
