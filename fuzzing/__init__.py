"""Coverage-guided fuzzing of the quote and certificate parsers (atheris, optional extra
``fuzz``): ``python -m fuzzing quote|certificate|all [--runs N] [--seconds S]``.

The targets and their seeds live in ``fuzzing.targets``, which does not need atheris, so
the test suite runs every target on its seeds without it.
"""
