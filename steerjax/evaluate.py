"""`python -m steerjax.evaluate --config configs/NAME.py --workdir DIR`: evaluate the latest
checkpoint without training, the same as `python -m steerjax.main --eval_only ...`.

The evaluators themselves live in `steerjax.evaluators`.
"""

if __name__ == "__main__":
  from steerjax import main  # pylint: disable=g-import-not-at-top
  main.run(evaluate_only=True)
