"""``python -m helpers ...``: the course's one command line (see ``helpers.cli``)."""
from .cli import main

main()
