"""`python -m steerjax.bench NAME [ARGS]`: run the benchmark module `steerjax.bench.NAME`.

Each benchmark module defines `main(argv: list[str]) -> None` and times the
things it compares side by side in one run, printing their ratio.
"""

import importlib
import pkgutil
import sys

import steerjax.bench


def available() -> list[str]:
  return sorted(m.name for m in pkgutil.iter_modules(steerjax.bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
  names = available()
  if not argv or argv[0] not in names:
    print(f"usage: python -m steerjax.bench NAME [ARGS]; NAME is one of: {', '.join(names)}", file=sys.stderr)
    return 2
  importlib.import_module(f"steerjax.bench.{argv[0]}").main(argv[1:])
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
