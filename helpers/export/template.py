"""The exporters' templates: text files in ``templates/`` with ``__NAME__`` placeholders, read and filled."""
from __future__ import annotations

import re
from importlib import resources

PLACEHOLDER = re.compile(r"__([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)__")  # __WEIGHT_SCALE__, __W__, ...


def read(name: str) -> str:
    """The text of ``templates/<name>``, shipped as package data."""
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def fill(name: str, **values: object) -> str:
    """``templates/<name>`` with every ``__KEY__`` replaced by ``str(values["KEY"])``.

    All placeholders are replaced in one pass, so a value that happens to contain ``__KEY__`` (a page
    title, say) is kept as it is. A placeholder without a value, or a value without a placeholder,
    raises a ``KeyError``: a template and its filler cannot drift apart unnoticed.
    """
    text = read(name)
    expected = set(PLACEHOLDER.findall(text))
    if expected != set(values):
        raise KeyError(f"templates/{name} has the placeholders {sorted(expected)}, but values were given for "
                       f"{sorted(values)}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), text)
