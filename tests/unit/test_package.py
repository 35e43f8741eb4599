"""The package as its users see it: `service.__version__`, the py.typed marker that lets a
type checker read the client's annotations, and `service.client.__all__` naming exactly the
client's public names (httpx's habit)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import metadata

import service
import service.client
from tests.conftest import ROOT


def test_the_version_is_the_installed_distributions() -> None:
    assert service.__version__ == metadata.version("sidetask")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert service.__version__ == project["version"]


def test_the_version_is_read_when_asked_not_at_import() -> None:
    """A process job's child imports the service's package first: importlib.metadata,
    tens of milliseconds, is not imported with it."""
    probe = "import sys, service.jobs.process; print('importlib.metadata' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


def test_an_unknown_attribute_of_the_package_is_an_attribute_error() -> None:
    assert not hasattr(service, "__versoin__")


def test_py_typed_is_shipped() -> None:
    assert (ROOT / "service" / "py.typed").is_file()
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "py.typed" in setuptools["package-data"]["service"]


def defined_names(source: str) -> set[str]:
    """The names a module's own top-level statements bind (not those it imports)."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {target.id for target in node.targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def test_the_clients_all_names_exactly_its_public_names() -> None:
    source = (ROOT / "service" / "client.py").read_text()
    public = {name for name in defined_names(source) if not name.startswith("_")}
    assert sorted(service.client.__all__) == sorted(public)
    assert len(set(service.client.__all__)) == len(service.client.__all__)
    for name in service.client.__all__:
        assert hasattr(service.client, name), name
