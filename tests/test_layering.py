"""The import rules of docs/design.md ("Layers"), enforced on every module under src/ddcat.

Every ``import ddcat...`` / ``from ddcat... import ...`` statement of a module (also those inside
functions) must name a module its layer may import. Python runs the ``__init__.py`` of every package
on an imported module's path, so importing ``ddcat.training.x`` also imports what
``ddcat/training/__init__.py`` imports (and, transitively, what the ``__init__`` of each package on
those paths imports): the test counts those imports too. A module that no layer claims fails the
test, so that a new module is placed in a layer on purpose.
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
    "ddcat.trainlog",
)

# layer -> the modules (or packages, with everything under them) it may import besides itself
RULES: dict[str, tuple[str, ...]] = {
    "ddcat.constants": (),
    "ddcat.errors": (),
    **{m: GROUND for m in GROUND if m not in ("ddcat.constants", "ddcat.errors")},
    # the training attack's choices are the registry's: importing ``ddcat.attacks.registry`` runs
    # ``ddcat/attacks/__init__.py``, which loads the whole attack layer (itself on constants/errors only)
    "ddcat.config": (*GROUND, "ddcat.attacks"),
    "ddcat.data": GROUND,
    "ddcat.models": GROUND,
    "ddcat.attacks": ("ddcat.constants", "ddcat.errors"),
    "ddcat.checkpoint": (*GROUND, "ddcat.models"),
    "ddcat.training": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint"),
    "ddcat.evaluation": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint"),
    # the attack layer for the registry's labels, order and colours (``ddcat.attacks.registry``)
    "ddcat.reporting": (*GROUND, "ddcat.data", "ddcat.evaluation", "ddcat.attacks"),
    "ddcat.certification": (*GROUND, "ddcat.data", "ddcat.models", "ddcat.checkpoint", "ddcat.evaluation"),
    "ddcat.experiment": (
        *GROUND, "ddcat.data", "ddcat.models", "ddcat.attacks", "ddcat.checkpoint",
        "ddcat.training", "ddcat.evaluation", "ddcat.certification", "ddcat.reporting",
    ),
    "ddcat.convert": (*GROUND, "ddcat.models", "ddcat.checkpoint"),  # ddcat convert: the paper code's checkpoints
    "ddcat.cli": ("ddcat",),  # the command line: anything
    "ddcat.__main__": ("ddcat.cli",),
}


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str, src: Path = SRC) -> bool:
    rel = Path(*name.split("."))
    return (src / rel).with_suffix(".py").is_file() or (src / rel / "__init__.py").is_file()


def ddcat_imports(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
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
                found.append((node.lineno, sub if is_module(sub, src) else node.module))
    return found


def package_inits(name: str, src: Path = SRC) -> list[Path]:
    """The ``__init__.py`` files Python runs to import ``name``: that of every package on its path
    (``ddcat``, ``ddcat.training`` for ``ddcat.training.loop``), ``name`` itself included if it is one."""
    parts = name.split(".")
    inits = [src.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts) + 1)]
    return [p for p in inits if p.is_file()]


def loaded_imports(path: Path, src: Path = SRC) -> list[tuple[int, str, tuple[str, ...]]]:
    """(line, module, via) of every ddcat module a file's import statements load: each module the
    statement names (via ``()``) and everything the ``__init__.py`` of a package on its path imports,
    followed transitively through the packages on those modules' paths (via: the packages whose
    ``__init__`` led there, outermost first)."""
    found: dict[tuple[int, str], tuple[str, ...]] = {}
    for line, target in ddcat_imports(path, src):
        found.setdefault((line, target), ())
        seen: set[Path] = set()
        stack: list[tuple[str, tuple[str, ...]]] = [(target, ())]
        while stack:
            name, via = stack.pop()
            for init in package_inits(name, src):
                if init in seen:
                    continue
                seen.add(init)
                chain = (*via, module_name(init, src))
                for _, sub in ddcat_imports(init, src):
                    found.setdefault((line, sub), chain)
                    stack.append((sub, chain))
    return [(line, target, via) for (line, target), via in found.items()]


def violations(path: Path, src: Path = SRC) -> list[str]:
    """The imports of a file its layer may not make, as ``line N: module (via package/__init__.py)``."""
    layer = layer_of(module_name(path, src))
    bad = []
    for line, target, via in loaded_imports(path, src):
        if not allowed(layer, target):
            how = f" (loaded by {' -> '.join(p.replace('.', '/') + '/__init__.py' for p in via)})" if via else ""
            bad.append(f"line {line}: {target}{how}")
    return bad


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
    bad = violations(path)
    assert not bad, f"{module} (layer {layer}) may import only {RULES[layer]}; it imports " + ", ".join(bad)


def test_the_rules_catch_an_upward_import(tmp_path):
    """The checker itself: evaluation importing reporting, or attacks importing config, is refused."""
    assert not allowed("ddcat.evaluation", "ddcat.reporting.tables")
    assert not allowed("ddcat.attacks", "ddcat.config")
    assert not allowed("ddcat.training", "ddcat.evaluation")
    assert not allowed("ddcat.constants", "ddcat.errors")
    assert not allowed("ddcat.reporting", "ddcat.training.loop")
    assert not allowed("ddcat.reporting", "ddcat.training.trainlog")
    assert allowed("ddcat.reporting", "ddcat.trainlog") and allowed("ddcat.training", "ddcat.trainlog")
    assert allowed("ddcat.runinfo", "ddcat")
    assert not allowed("ddcat.data", "ddcat.models")
    assert allowed("ddcat.config", "ddcat.attacks.registry") and not allowed("ddcat.config", "ddcat.models")
    assert not allowed("ddcat.metrics", "ddcat.attacks.registry")
    assert not allowed("ddcat.certification", "ddcat.training")
    assert not allowed("ddcat.certification", "ddcat.reporting")
    f = tmp_path / "probe.py"
    f.write_text("def g():\n    from ddcat.reporting import plots\n    import ddcat.attacks.losses\n")
    assert ddcat_imports(f) == [(2, "ddcat.reporting.plots"), (3, "ddcat.attacks.losses")]
    with pytest.raises(AssertionError, match="no layer"):
        layer_of("ddcat.newthing")


def write_tree(src: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)


def test_the_rules_follow_package_inits(tmp_path):
    """Importing ``ddcat.evaluation.settings`` runs ``ddcat/evaluation/__init__.py``: what it imports,
    and what the ``__init__`` of the packages on those paths import, counts as imported by the file.
    A probe tree where evaluation's ``__init__`` pulls in the training layer (directly, and through
    data's ``__init__``) fails reporting's rule although the statement itself names an allowed module."""
    src = tmp_path / "src"
    write_tree(src, {
        "ddcat/__init__.py": "",
        "ddcat/trainlog.py": "",
        "ddcat/data/__init__.py": "from ddcat.data import palette\nfrom ddcat.training.loop import train\n",
        "ddcat/data/palette.py": "",
        "ddcat/evaluation/__init__.py": "from ddcat.data.palette import x\n",
        "ddcat/evaluation/settings.py": "",
        "ddcat/training/__init__.py": "from ddcat.training.loop import train\n",
        "ddcat/training/loop.py": "import ddcat.evaluation.settings\n",
        "ddcat/training/trainlog.py": "",
        "ddcat/reporting/__init__.py": "",
        "ddcat/reporting/plots.py": "import os\n\nfrom ddcat.evaluation.settings import y\n",
        "ddcat/reporting/gather.py": "def g():\n    from ddcat.training import trainlog\n",
        "ddcat/reporting/tables.py": "from ddcat import trainlog\nimport ddcat.evaluation\n",
    })
    plots = src / "ddcat/reporting/plots.py"
    # the statement alone names an allowed module: a checker reading only statements passes it
    assert ddcat_imports(plots, src) == [(3, "ddcat.evaluation.settings")]
    assert allowed("ddcat.reporting", "ddcat.evaluation.settings")
    assert sorted(loaded_imports(plots, src)) == [
        (3, "ddcat.data.palette", ("ddcat.evaluation",)),
        (3, "ddcat.evaluation.settings", ()),
        (3, "ddcat.training.loop", ("ddcat.evaluation", "ddcat.data")),
    ]
    assert violations(plots, src) == [
        "line 3: ddcat.training.loop (loaded by ddcat/evaluation/__init__.py -> ddcat/data/__init__.py)"
    ]
    # the old place of the log format: the training package's __init__ loads the loop
    assert violations(src / "ddcat/reporting/gather.py", src) == [
        "line 2: ddcat.training.trainlog",
        "line 2: ddcat.training.loop (loaded by ddcat/training/__init__.py)",
    ]
    # ``import ddcat.evaluation`` runs evaluation's __init__ too; its data import is fine, but data's
    # __init__ (the next package on the path) loads training
    assert violations(src / "ddcat/reporting/tables.py", src) == [
        "line 2: ddcat.training.loop (loaded by ddcat/evaluation/__init__.py -> ddcat/data/__init__.py)"
    ]
    # the ground-floor log format with an empty ddcat/__init__.py loads nothing else
    write_tree(src, {"ddcat/reporting/tables.py": "from ddcat import trainlog\n"})
    assert violations(src / "ddcat/reporting/tables.py", src) == []
    assert loaded_imports(src / "ddcat/reporting/tables.py", src) == [(1, "ddcat.trainlog", ())]
    # cycles (data's __init__ imports data.palette; evaluation -> data -> training -> evaluation) end:
    # each __init__ is followed once, each module listed once with the first chain that loaded it
    assert sorted(loaded_imports(src / "ddcat/training/loop.py", src)) == [
        (1, "ddcat.data.palette", ("ddcat.evaluation",)),
        (1, "ddcat.evaluation.settings", ()),
        (1, "ddcat.training.loop", ("ddcat.evaluation", "ddcat.data")),
    ]
    assert violations(src / "ddcat/training/loop.py", src) == ["line 1: ddcat.evaluation.settings"]


def test_the_design_doc_names_every_layer_and_ground_floor_module():
    """docs/design.md's "Layers" section is the prose of RULES: its ground-floor paragraph names
    every GROUND module, and the section names every layer."""
    doc = (SRC.parent / "docs" / "design.md").read_text()
    section = doc[doc.index("## Layers"):doc.index("## Adding an attack")]
    ground = section[section.index("**Ground floor**"):section.index("**Data**")]
    for module in GROUND[1:]:
        assert f"`{module.removeprefix('ddcat.')}`" in ground, f"docs/design.md's ground floor omits {module}"
    for layer in RULES:
        if layer not in GROUND:
            assert f"`{layer}`" in section, f"docs/design.md's Layers section omits {layer}"
