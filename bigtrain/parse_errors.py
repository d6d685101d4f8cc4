"""Turn jsonargparse's multi-line parse errors into one line that names the culprit and what is valid."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

from bigtrain.errors import closest

_BOILERPLATE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
    "Parser key",
    "Problem with given class_path",
)


def one_line(message: str, parser_keys: Iterable[str] = ()) -> str:
    """The most specific statement of a jsonargparse error, as one line with a suggestion when possible."""
    top = re.match(r'\s*Parser key "([^"]+)":', message)
    prefix = top.group(1) if top else ""
    cls = re.search(r"Problem with given class_path '([^']+)':", message)
    unrecognized = (
        re.search(r"unrecognized arguments: (\S+)", message)
        or re.search(r"Option '([^']+)' is not accepted", message)
        or re.search(r"Group '([^']+)' does not accept option '([^']+)'", message)
        or re.search(r"does not accept option '([^']+)'", message)
    )
    if unrecognized:
        arg = ".".join(unrecognized.groups()).lstrip("-").split("=")[0]
        if cls:
            key = f"{prefix}.{arg}"
            choices = [f"{prefix}.{k}" for k in class_keys(cls.group(1))]
        else:
            key, choices = arg, list(parser_keys)
        near = closest(key, choices) or closest(key.split(".")[0], choices)
        return f"unknown option '{key}'" + (f"; did you mean '{near}'?" if near else "")
    inner = re.findall(r'Parser key "([^"]+)":\s*\n\s*(.+)', message)
    if inner and (len(inner) > 1 or not cls):
        key, detail = inner[-1]
        full = f"{prefix}.{key}" if cls and key != prefix else key
        if detail.startswith("Does not validate"):
            given = re.search(r'Parser key "' + re.escape(key) + r'":.*?Given value: ([^\n]+)', message, re.S)
            expected = re.search(
                r"Subtypes: \[(.*?)(?:, <class 'NoneType'>)?\]\s*$", message[message.find(key) :], re.M
            )
            detail = f"expected {expected.group(1) if expected else 'another type'}"
            detail += f", got: {given.group(1)}" if given else ""
        return f"invalid value for '{full}': {_tidy(detail)}"
    for line in message.splitlines():
        text = line.strip().lstrip("- ").strip()
        if text and not text.startswith(_BOILERPLATE):
            return _tidy(text)
    return _tidy(message.strip().splitlines()[0] if message.strip() else "invalid arguments")


def class_keys(class_path: str) -> list[str]:
    """Every dotted argument key a class accepts (nested dataclass fields included)."""
    from jsonargparse import ArgumentParser

    from bigtrain.lightning_compat import argument_dests

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, fail_untyped=False)
    return [dest for dest in argument_dests(parser) if dest not in ("help", "__default_config__")]


def _tidy(text: str) -> str:
    text = re.sub(r"typing\.Literal\[(.*?)\]", r"one of \1", text)
    text = re.sub(r"<class '([\w.]+)'>", r"\1", text)
    text = text.replace("Expected a ", "expected ").replace(". Got value: ", ", got: ")
    return " ".join(text.split())
