"""Which ipywidgets each way of running the course gets (issue 37): JupyterLab 4 shows no widget of
ipywidgets 7 ("Click to show javascript error"), so local installs and Binder ask for 8; Colab keeps its
own 7.7.1 and never installs these files, and .ci/colab-check holds that pin instead of the files' one."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def requirement(path: Path, name: str) -> str:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    found = [line for line in lines if re.match(rf"{name}\s*[=<>~!]", line)]
    assert len(found) == 1, f"{path.name}: {found}"
    return found[0].replace(" ", "")


def test_local_installs_and_binder_ask_for_ipywidgets_8_with_jupyterlab_4():
    assert requirement(ROOT / "requirements.txt", "ipywidgets") == "ipywidgets>=8.0"
    assert requirement(ROOT / "requirements.txt", "jupyterlab") == "jupyterlab>=4.0"
    assert requirement(ROOT / "binder" / "requirements.txt", "ipywidgets") == "ipywidgets>=8.0"


def test_colab_check_keeps_colabs_ipywidgets_7_and_drops_the_files_pin():
    script = (ROOT / ".ci" / "colab-check").read_text()
    assert "ipywidgets==7.7.1" in script
    dropped = re.search(r"grep -v -E '\^\(([^)]*)\)", script).group(1).split("|")
    assert {"torch", "torchvision", "ipywidgets", "jupyterlab"} <= set(dropped)
    assert '-m pytest tests' in script and 'PYTHONWARNINGS="error::UserWarning,error::RuntimeWarning"' in script
