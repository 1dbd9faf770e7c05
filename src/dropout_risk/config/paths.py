"""Where the project's own files are: the repository root (for git provenance) and conf/."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"


def pipeline_command(script: str, *args: str) -> str:
    """The command line that runs pipelines/<script> with `args`, pasteable as printed: this
    interpreter (the venv's python, so no activated venv is needed) and the script's path, both
    relative to the working folder when they are inside it."""
    import os
    import shlex
    import sys

    def shown(path: str) -> str:
        rel = os.path.relpath(path)
        return path if rel.startswith("..") else rel

    return shlex.join([shown(sys.executable), shown(str(PROJECT_ROOT / "pipelines" / script)), *args])
