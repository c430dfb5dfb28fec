"""The core a user imports for their own training loop (hsic, taps, regularizer, mask) reaches nothing of the
training, distributed, host-sync or command-line code: the data flows one way."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("ibrar.hsic", "ibrar.taps", "ibrar.regularizer", "ibrar.mask")


def module_file(name: str) -> Path:
    path = SRC.joinpath(*name.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def ibrar_imports(name: str) -> set[str]:
    """The ibrar modules `name` imports directly (absolute or relative, at any depth of the file)."""
    path = module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names if module_file(f"{base}.{alias.name}").exists()}
    return {m for m in found if m == "ibrar" or m.startswith("ibrar.")}


def reachable(name: str) -> dict[str, str]:
    """Every ibrar module reachable from `name` by imports, each with the module that imports it."""
    seen, todo = {name: ""}, [name]
    while todo:
        current = todo.pop()
        for target in ibrar_imports(current):
            if target not in seen and module_file(target).exists():
                seen[target] = current
                todo.append(target)
    return seen


@pytest.mark.parametrize("core", CORE)
def test_a_core_module_imports_only_the_core(core):
    outside = {module: importer for module, importer in reachable(core).items()
               if module not in (*CORE, "ibrar", core)}
    assert not outside, f"{core} reaches {outside} (module: the module importing it)"


def test_the_package_and_its_core_load_without_the_training_code():
    code = ("import sys, ibrar, ibrar.mask, ibrar.regularizer, ibrar.hsic, ibrar.taps; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('ibrar'))))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                            timeout=120).stdout.split()
    assert set(loaded) == {"ibrar", *CORE}


def test_the_checker_sees_an_edge_into_training_code(tmp_path, monkeypatch):
    """The test above would catch `from ibrar.distributed import ...` in mask.py (its old import)."""
    fake = tmp_path / "ibrar"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "mask.py").write_text("from ibrar.distributed import all_reduce_mean\nfrom .hsic import gaussian_kernel\n")
    (fake / "hsic.py").write_text("")
    (fake / "distributed.py").write_text("from ibrar.host_sync import sync_allowed\n")
    (fake / "host_sync.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    assert set(reachable("ibrar.mask")) == {"ibrar.mask", "ibrar.hsic", "ibrar.distributed", "ibrar.host_sync"}
