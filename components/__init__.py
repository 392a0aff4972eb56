"""KFP v2 components of the fewframes pipeline (importable as ``fewframes.components``).

- ``steps``: what each step does, as plain functions of paths and values (no KFP import).
- ``definitions``: the thin ``@dsl.component`` wrappers (imports kfp), listed in ``COMPONENTS``.

Import ``fewframes.components.definitions`` for the components; this package itself imports nothing heavy.
"""
