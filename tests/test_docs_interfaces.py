"""The interfaces the docs name exist, with the parameters the docs give them: docs/INTERFACES.md and the README
are where a user or contributor looks first, so a rename must not leave them pointing at nothing."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("docs/INTERFACES.md", "README.md", "docs/evaluation.md", "docs/profiles.md", "docs/reproduction.md",
        "bench/gpu/README.md")
# `ibrar.a.b` or `ibrar.a.b(x, y=1)` inside a code span
REFERENCE = re.compile(r"`(ibrar(?:\.\w+)+)(?:\(([^`()]*)\))?")


def resolve(dotted: str) -> object:
    """The module, class or function a dotted name names (importing the longest module prefix)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(dotted)


# `name(x, y=1)` inside a code span, in a bullet that opens with `ibrar.module`: one of that module's functions
BARE_CALL = re.compile(r"`(\w+)\(([^`()]*)\)")


def parameter_names(arguments: str) -> list[str]:
    """The names a documented call gives: `x, kind="gaussian"|"linear", ...` -> ['x', 'kind'] (an upper-case
    name such as OUT_DIR is a placeholder for the value, not a parameter's name)."""
    names = []
    for argument in re.sub(r'"[^"]*"', '""', arguments).split(","):
        name = argument.split("=")[0].strip()
        if name.isidentifier() and not name.isupper():
            names.append(name)
    return names


def references() -> list[tuple[str, str, str | None]]:
    """(doc, dotted name, documented arguments or None) for every interface the docs name. A name ending in `_`
    is a family (`ibrar.plots.plot_*`), not one interface."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for match in REFERENCE.finditer(text):
            if not match.group(1).endswith("_"):
                found.append((doc, match.group(1), match.group(2)))
        for bullet in re.split(r"\n(?=- )", text):
            opening = re.match(r"- `(ibrar(?:\.\w+)+)`", bullet)
            if opening is None:
                continue
            module = opening.group(1)
            for call in BARE_CALL.finditer(bullet):
                try:
                    resolve(f"{module}.{call.group(1)}")
                except (ModuleNotFoundError, AttributeError):
                    continue  # a method or an instance (`reg(x, y, features)`), not one of the module's names
                found.append((doc, f"{module}.{call.group(1)}", call.group(2)))
    return found


def test_the_docs_name_interfaces_at_all():
    assert len({name for _, name, _ in references()}) > 30


@pytest.mark.parametrize(("doc", "name", "arguments"), references(), ids=lambda v: v if isinstance(v, str) else "")
def test_each_interface_the_docs_name_exists_with_its_parameters(doc, name, arguments):
    try:
        target = resolve(name)
    except (ModuleNotFoundError, AttributeError) as err:
        pytest.fail(f"{doc} names `{name}`, which does not exist ({err})")
    if not arguments or not callable(target):
        return
    signature = inspect.signature(target)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    missing = [n for n in parameter_names(arguments) if n not in signature.parameters]
    assert not missing, f"{doc}: `{name}({arguments})` gives {missing}, which {name}{signature} does not take"


def documented_flags() -> list[tuple[str, str, str]]:
    """(doc, subcommand, --flag) for every `ibrar SUBCOMMAND ... --flag` the docs write, in code blocks and spans."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for command in re.findall(r"(?:^|`|\n)\s*ibrar ([a-z][a-z-]*)\b([^`\n#]*)", text):
            found += [(doc, command[0], flag) for flag in re.findall(r"(--[a-z][a-z-]*)", command[1])]
    return sorted(set(found))


def test_the_docs_write_ibrar_commands_with_flags():
    assert len(documented_flags()) > 20


@pytest.mark.parametrize(("doc", "command", "flag"), documented_flags(), ids=lambda v: v)
def test_each_flag_the_docs_give_an_ibrar_command_exists(doc, command, flag):
    from ibrar.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices  # noqa: SLF001
    assert command in subcommands, f"{doc} runs `ibrar {command}`, which is no subcommand ({sorted(subcommands)})"
    flags = {option for action in subcommands[command]._actions for option in action.option_strings}  # noqa: SLF001
    assert flag in flags, f"{doc} gives `ibrar {command} {flag}`, which it does not take ({sorted(flags)})"
