"""The import rules of docs/design.md ("Layers"), enforced on every module under src/ddcat.

Every ``import ddcat...`` / ``from ddcat... import ...`` statement of a module (also those inside
functions) must name a module its layer may import. A module that no layer claims fails the test,
so that a new module is placed in a layer on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "ddcat"

# The ground floor: modules every layer may import. ``constants`` and ``errors`` import nothing of
# ddcat; the others import only the ground floor. ``ddcat`` is the package itself (its version).
GROUND = (
    "ddcat",
    "ddcat.constants",
    "ddcat.errors",
    "ddcat.config",
    "ddcat.parsing",
    "ddcat.statistics",
    "ddcat.metrics",
    "ddcat.outdir",
    "ddcat.distributed",
    "ddcat.runinfo",
    "ddcat.experiment_file",
    "ddcat.threads",
    "ddcat.activity",
    "ddcat.rngstate",
)

# layer -> the modules (or packages, with everything under them) it may import besides itself
RULES: dict[str, tuple[str, ...]] = {
    "ddcat.constants": (),
    "ddcat.errors": (),
    **{m: GROUND for m in GROUND if m not in ("ddcat.constants", "ddcat.errors")},
    # the training attack's choices are the registry's (the attack layer imports only constants/errors)
    "ddcat.config": (*GROUND, "ddcat.attacks.registry"),
    "ddcat.data": GROUND,
    "ddcat.models": GROUND,
    "ddcat.attacks": ("ddcat.constants", "ddcat.errors"),
    "ddcat.checkpoint": (*GROUND, "ddcat.models"),
    "ddcat.training": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint"),
    "ddcat.evaluation": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint"),
    "ddcat.reporting": (*GROUND, "ddcat.data", "ddcat.evaluation", "ddcat.training.trainlog", "ddcat.attacks.registry"),
    "ddcat.certification": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.checkpoint", "ddcat.evaluation"),
    "ddcat.experiment": (
        *GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint",
        "ddcat.training", "ddcat.evaluation", "ddcat.certification", "ddcat.reporting",
    ),
    "ddcat.convert": (*GROUND, "ddcat.models", "ddcat.checkpoint"),  # ddcat convert: the paper code's checkpoints
    "ddcat.cli": ("ddcat",),  # the command line: anything
    "ddcat.__main__": ("ddcat.cli",),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def ddcat_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ddcat module a file imports; ``from P import m`` counts as ``P.m``
    when ``P.m`` is a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "ddcat"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            if node.module is None or node.module.split(".")[0] != "ddcat":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((node.lineno, sub if is_module(sub) else node.module))
    return found


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(module: str) -> str:
    """The most specific rule that claims ``module``."""
    claims = [layer for layer in RULES if within(module, layer)]
    if not claims or claims == ["ddcat"] and module != "ddcat":
        raise AssertionError(f"{module} belongs to no layer of docs/design.md: add it to RULES and the doc")
    return max(claims, key=len)


def allowed(layer: str, target: str) -> bool:
    if within(target, layer) or layer == "ddcat.cli":
        return True
    # a ground-floor rule of "ddcat" means the package itself, not everything below it
    return any(target == p if p == "ddcat" else within(target, p) for p in RULES[layer])


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_checked():
    assert len(MODULES) > 50 and all(p.suffix == ".py" for p in MODULES)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_follow_the_layers(path):
    module = module_name(path)
    layer = layer_of(module)
    bad = [f"line {line}: {target}" for line, target in ddcat_imports(path) if not allowed(layer, target)]
    assert not bad, f"{module} (layer {layer}) may import only {RULES[layer]}; it imports " + ", ".join(bad)


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: evaluation importing reporting, or attacks importing config, is refused."""
    assert not allowed("ddcat.evaluation", "ddcat.reporting.tables")
    assert not allowed("ddcat.attacks", "ddcat.config")
    assert not allowed("ddcat.training", "ddcat.evaluation")
    assert not allowed("ddcat.constants", "ddcat.errors")
    assert not allowed("ddcat.reporting", "ddcat.training.loop")
    assert allowed("ddcat.reporting", "ddcat.training.trainlog")
    assert allowed("ddcat.runinfo", "ddcat")
    assert not allowed("ddcat.data", "ddcat.models")
    assert allowed("ddcat.config", "ddcat.attacks.registry") and not allowed("ddcat.config", "ddcat.attacks.apgd")
    assert not allowed("ddcat.metrics", "ddcat.attacks.registry")
    assert not allowed("ddcat.certification", "ddcat.training")
    assert not allowed("ddcat.certification", "ddcat.reporting")
    f = tmp_path / "probe.py"
    f.write_text("def g():\n    from ddcat.reporting import plots\n    import ddcat.attacks.losses\n")
    assert ddcat_imports(f) == [(2, "ddcat.reporting.plots"), (3, "ddcat.attacks.losses")]
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("ddcat.newthing")
