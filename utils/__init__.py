from pathlib import Path

# The repository's root: where active.py and sweep.py live.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
