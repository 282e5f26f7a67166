"""The command-line programs: `train` (main.py), `evaluate` (evaluate.py) and `preview`.

Each is a module with a `run()` entry point; the package's console scripts and the
top-level `main.py` / `evaluate.py` call them."""
