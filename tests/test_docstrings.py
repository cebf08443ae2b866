"""Every docstring example in cascade, policies and experiments runs, and the runner really ran them."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import pkgutil

import pytest

import cascade
import experiments
import policies

MODULES = sorted(
    module.name
    for package in (cascade, policies, experiments)
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
    if not module.name.endswith("__main__")  # running it would start the CLI
)


def runnable_examples(source: str) -> int:
    """Examples in the docstrings of the module's source text, less the skipped ones (read without the runner)."""
    nodes = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = [ast.get_docstring(node) or "" for node in ast.walk(ast.parse(source)) if isinstance(node, nodes)]
    parser = doctest.DocTestParser()
    return sum(not example.options.get(doctest.SKIP) for text in docstrings for example in parser.get_examples(text))


@pytest.mark.parametrize("name", ["cascade", "policies", "experiments", *MODULES])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, report=False)
    assert result.failed == 0
    # a runner that finds nothing passes silently: compare with the examples the module's text holds
    assert result.attempted == runnable_examples(inspect.getsource(module)), f"{name}: not every example ran"


def test_the_runner_sees_the_packages_examples() -> None:
    assert len(MODULES) > 40 and {"cascade.persistence", "policies.registry", "experiments.curves"} <= set(MODULES)
