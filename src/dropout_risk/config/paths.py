"""Where the project's own files are: the repository root (for git provenance) and conf/."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CONF_DIR = PROJECT_ROOT / "conf"
