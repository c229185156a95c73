"""The layering rule, enforced: dependencies point one way, and workers never load torch.

The rooms (the four source folders are mapped into one import package ``finscore``)::

    the ground   finscore/*.py (but finscore/__init__.py), finscore/sim, finscore/features,
                 finscore/models
    the app      finscore/app (may import everything)
    workers      finscore/streams (folder streams/), finscore/app/cli/worker.py
    training     finscore/compression (folder compression/)
    the contract finscore/schemas (folder schemas/)

Rules (:data:`RULES`; :func:`violations` checks them by an AST scan of every module, every
import statement at any depth, so a function-level lazy import counts as much as a top-level
one, and ``from finscore import compression`` counts as an import of ``finscore.compression``;
``importlib.import_module("...")`` with a literal name counts too; imports under
``if TYPE_CHECKING:`` count as well, a layer is a layer for the type checker too):

- the ground never imports finscore.app, finscore.streams or finscore.compression;
- finscore.streams and finscore.compression never import each other nor finscore.app;
- finscore.schemas imports no other finscore package except finscore.exceptions;
- workers and the ground never import torch or faust; compression never imports a Kafka client.

And at run time (a subprocess, :func:`loaded_modules`): importing the workers loads neither
torch, faust nor finscore.compression. Each rule is proven able to fail on a synthetic tree.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Source folder -> the import package it is mapped to (pyproject's ``package-dir``).
FOLDERS = {
    "finscore": "finscore",
    "streams": "finscore.streams",
    "compression": "finscore.compression",
    "schemas": "finscore.schemas",
}
GROUND_PACKAGES = ("finscore.sim", "finscore.features", "finscore.families", "finscore.models")
WORKER_MODULES = ("finscore.streams", "finscore.app.cli.worker")


@dataclass(frozen=True)
class Rule:
    """Modules matching ``applies_to`` must not import anything under ``forbidden`` (unless it
    is under ``allowed``)."""

    name: str
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] = ()

    def applies_to(self, module: str) -> bool:
        return RULE_SCOPES[self.name](module)


def under(name: str, *prefixes: str) -> bool:
    """True when the dotted ``name`` is one of ``prefixes`` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def is_ground(module: str) -> bool:
    """finscore/*.py (not the package's __init__), finscore.sim, .features, .models."""
    parts = module.split(".")
    top_level = (
        len(parts) == 2
        and parts[0] == "finscore"
        and not under(
            module, "finscore.app", "finscore.streams", "finscore.compression", "finscore.schemas"
        )
    )
    return top_level or under(module, *GROUND_PACKAGES)


RULE_SCOPES = {
    "ground": is_ground,
    "streams": lambda m: under(m, "finscore.streams"),
    "compression": lambda m: under(m, "finscore.compression"),
    "schemas": lambda m: under(m, "finscore.schemas"),
    "workers-no-torch": lambda m: under(m, *WORKER_MODULES),
    "ground-no-torch": lambda m: is_ground(m) or under(m, "finscore.schemas"),
    "compression-no-kafka": lambda m: under(m, "finscore.compression"),
}

RULES = (
    Rule("ground", ("finscore.app", "finscore.streams", "finscore.compression")),
    Rule("streams", ("finscore.compression", "finscore.app")),
    Rule("compression", ("finscore.streams", "finscore.app")),
    Rule("schemas", ("finscore",), allowed=("finscore.schemas", "finscore.exceptions")),
    Rule("workers-no-torch", ("torch", "faust")),
    Rule("ground-no-torch", ("torch", "faust")),
    Rule("compression-no-kafka", ("confluent_kafka", "faust")),
)


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    """(dotted module name, path) of every .py file in the four source folders under
    ``root`` (a package's ``__init__.py`` is the package's own name)."""
    for folder, package in FOLDERS.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            if folder == "finscore" and rel and rel[0] in ("streams", "compression", "schemas"):
                continue  # not a source folder of the package (there is none today)
            yield ".".join((package, *rel)), path


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module of a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path) -> set[str]:
    """Every module ``module`` (at ``path``) imports, at any depth of its code: ``import a.b``
    gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (b may be a submodule:
    ``from finscore import compression``); a literal ``importlib.import_module("x")`` gives
    ``x``."""
    names: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return {n for n in names if n}


def violations(root: Path) -> list[str]:
    """``"<rule>: <module> imports <name>"`` for every import that breaks a rule."""
    out = []
    for module, path in modules(root):
        imported = imports_of(module, path)
        for rule in RULES:
            if not rule.applies_to(module):
                continue
            bad = {n for n in imported if under(n, *rule.forbidden) and not under(n, *rule.allowed)}
            # ``from a.b import C`` gives a.b and a.b.C: report the import once, as a.b
            out += [
                f"{rule.name}: {module} imports {n}"
                for n in sorted(bad)
                if n.rpartition(".")[0] not in bad
            ]
    return out


def loaded_modules(
    imports: tuple[str, ...], watched: tuple[str, ...], path: Path | None = None
) -> list[str]:
    """Which of ``watched`` a fresh interpreter has in ``sys.modules`` after importing
    ``imports`` (``path`` first on its ``sys.path`` when given)."""
    code = textwrap.dedent(
        f"""
        import importlib, json, sys
        {"sys.path.insert(0, " + repr(str(path)) + ")" if path else ""}
        for name in {list(imports)!r}:
            importlib.import_module(name)
        print(json.dumps([m for m in {list(watched)!r} if m in sys.modules]))
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=path or ROOT
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


# -- the rules, on this repository ------------------------------------------------------------


def test_the_layering_rules_hold() -> None:
    found = violations(ROOT)
    assert not found, "\n".join(found)


def test_workers_never_load_torch_faust_or_compression() -> None:
    watched = ("torch", "faust", "finscore.compression")
    assert loaded_modules(("finscore.streams", "finscore.streams.worker", *WORKER_MODULES),
                          watched) == []  # fmt: skip


def test_the_cli_entry_and_the_demo_never_load_torch() -> None:
    watched = ("torch", "faust", "finscore.compression")
    assert loaded_modules(("finscore.app.cli.group", "finscore.app.demo"), watched) == []


def test_the_scan_sees_every_source_folder() -> None:
    found = dict(modules(ROOT))
    for name in ("finscore.models.registry", "finscore.streams.worker",
                 "finscore.compression.plan", "finscore.schemas.codec", "finscore.app.cli.worker",
                 "finscore.schemas.columnar.codec"):  # fmt: skip
        assert name in found, name
    assert is_ground("finscore.settings") and is_ground("finscore.models.artifact")
    assert not is_ground("finscore") and not is_ground("finscore.app.demo")


def test_only_finscore_is_a_top_level_package() -> None:
    """pyproject maps streams/, compression/ and schemas/ into finscore.*, lists every
    package folder, and nothing else; from outside the checkout no top-level ``streams``,
    ``schemas`` (or a ``compression`` of ours, a 3.14 stdlib name) can be imported."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {package: folder for folder, package in FOLDERS.items()}
    listed = set(tool["packages"])
    assert all(under(p, "finscore") for p in listed), listed
    on_disk = {m for m, p in modules(ROOT) if p.name == "__init__.py"}
    assert on_disk == listed, (
        f"package folders not in pyproject: {sorted(on_disk - listed)}; "
        f"listed but missing: {sorted(listed - on_disk)}"
    )
    code = (
        "import importlib.util, json;"
        "s = {n: importlib.util.find_spec(n) for n in ('streams', 'schemas', 'compression')};"
        "print(json.dumps({n: (v.origin or str(list(v.submodule_search_locations or [])))"
        " if v else None for n, v in s.items()}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    specs = json.loads(r.stdout)
    assert specs["streams"] is None and specs["schemas"] is None, specs
    assert specs["compression"] is None or str(ROOT) not in specs["compression"], specs


# -- every package's public surface -----------------------------------------------------------


def packages() -> list[str]:
    return sorted(m for m, p in modules(ROOT) if p.name == "__init__.py")


def _submodule(package: str, name: str) -> bool:
    try:
        importlib.import_module(f"{package}.{name}")
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("package", packages())
def test_every_package_defines_all_and_every_name_resolves(package: str) -> None:
    mod = importlib.import_module(package)
    names = getattr(mod, "__all__", None)
    assert isinstance(names, list | tuple), f"{package} has no __all__"
    assert all(isinstance(n, str) for n in names)
    assert len(set(names)) == len(names), f"{package}.__all__ repeats a name"
    # a name is an attribute, or a submodule (resolved by importing it: whether it is an
    # attribute already depends on what else was imported before)
    missing = [n for n in names if not hasattr(mod, n) and not _submodule(package, n)]
    assert not missing, f"{package}.__all__ names what it does not have: {missing}"


# -- each rule can fail -----------------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    """A synthetic checkout: the four source folders with ``files`` (path -> source)."""
    for folder in FOLDERS:
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").write_text("")
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return tmp_path


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("finscore/settings.py", "import finscore.app.cli\n",
         "ground: finscore.settings imports finscore.app.cli"),
        ("finscore/models/registry.py", "from finscore import compression\n",
         "ground: finscore.models.registry imports finscore.compression"),
        ("finscore/features/fraud.py",
         "def f():\n    from finscore.streams.scoring import Scorer\n    return Scorer\n",
         "ground: finscore.features.fraud imports finscore.streams.scoring"),
        ("finscore/sim/market.py", "if True:\n    import finscore.streams\n",
         "ground: finscore.sim.market imports finscore.streams"),
        ("finscore/models/keys.py",
         "import importlib\nimportlib.import_module('finscore.app.demo')\n",
         "ground: finscore.models.keys imports finscore.app.demo"),
        ("streams/worker.py", "from finscore.compression.plan import Plan\n",
         "streams: finscore.streams.worker imports finscore.compression.plan"),
        ("streams/fraud/pipeline.py", "from ... import app\n",
         "streams: finscore.streams.fraud.pipeline imports finscore.app"),
        ("streams/kafka.py", "from finscore import app\n",
         "streams: finscore.streams.kafka imports finscore.app"),
        ("compression/plan.py", "from finscore.streams import hot_swap\n",
         "compression: finscore.compression.plan imports finscore.streams"),
        ("compression/cli.py", "from finscore.app.cli.context import Ctx\n",
         "compression: finscore.compression.cli imports finscore.app.cli.context"),
        ("schemas/codec.py", "from finscore.features import fraud\n",
         "schemas: finscore.schemas.codec imports finscore.features"),
        ("schemas/columnar/codec.py", "from ...logging import get_logger\n",
         "schemas: finscore.schemas.columnar.codec imports finscore.logging"),
        ("streams/scoring.py", "def f():\n    import torch\n",
         "workers-no-torch: finscore.streams.scoring imports torch"),
        ("finscore/app/cli/worker.py", "import faust\n",
         "workers-no-torch: finscore.app.cli.worker imports faust"),
        ("finscore/features/market.py", "from torch import nn\n",
         "ground-no-torch: finscore.features.market imports torch"),
        ("compression/export.py", "from confluent_kafka import Producer\n",
         "compression-no-kafka: finscore.compression.export imports confluent_kafka"),
    ],
)  # fmt: skip
def test_each_rule_reports_a_violation(
    tmp_path: Path, path: str, source: str, expected: str
) -> None:
    assert expected in violations(_tree(tmp_path, {path: source}))


def test_what_the_rules_allow_is_not_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "schemas/codec.py": "from finscore.exceptions import FinscoreError\n"
            "from finscore.schemas import topics\nfrom . import samples\n",
            "finscore/app/demo.py": "import finscore.streams, finscore.compression, torch\n",
            "finscore/__init__.py": "import finscore.app\n",  # the package root is no ground
            "finscore/models/registry.py": "from finscore.models.artifact import Artifact\n"
            "from . import keys\nimport numpy\n",
            "streams/worker.py": "from finscore.models.registry import Registry\n"
            "from .scoring import Scorer\n",
            "compression/plan.py": "import torch\nfrom finscore.models import registry\n",
        },
    )
    assert violations(root) == []


def test_relative_imports_resolve_against_their_package(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"streams/fraud/__init__.py": "from .. import worker\n",
                            "streams/fraud/pipeline.py": "from .columns import x\n"})  # fmt: skip
    found = dict(modules(root))
    assert imports_of("finscore.streams.fraud", found["finscore.streams.fraud"]) == {
        "finscore.streams",
        "finscore.streams.worker",
    }
    assert imports_of("finscore.streams.fraud.pipeline", found["finscore.streams.fraud.pipeline"]) \
        == {"finscore.streams.fraud.columns", "finscore.streams.fraud.columns.x"}  # fmt: skip


def test_the_runtime_check_reports_a_loaded_module(tmp_path: Path) -> None:
    (tmp_path / "heavy_pkg").mkdir()
    (tmp_path / "heavy_pkg" / "__init__.py").write_text("import json, fractions\n")
    assert loaded_modules(("heavy_pkg",), ("fractions", "not_a_module"), tmp_path) == ["fractions"]
