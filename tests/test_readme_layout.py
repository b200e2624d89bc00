"""README's Layout section names every file of the helpers package, so a reader finds each one there."""
import re

from helpers import env

SKIPPED = {"__pycache__", "build"}       # made by Python and by the C++ kernel's build, not part of the package


def layout_text() -> str:
    readme = (env.REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section


def named(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(word)}(?![\w])", text) is not None


def test_the_layout_section_names_every_file_under_helpers():
    text = layout_text()
    root = env.REPO_ROOT / "helpers"
    missing = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_dir() or SKIPPED & set(relative.parts) or path.suffix == ".pyc":
            continue
        folders = relative.parts[:-1]
        if named(text, path.name) and (path.name != "__init__.py" or not folders or named(text, folders[-1] + "/")):
            continue
        if path.name == "__init__.py" and not folders:
            continue                          # the package itself: "helpers/"
        # a non-Python file inside a folder the layout names (templates/, csrc/) is named by its folder
        if path.suffix != ".py" and any(named(text, folder + "/") for folder in folders):
            continue
        missing.append(str(relative))
    assert not missing, f"README's Layout section does not name: {missing}"
