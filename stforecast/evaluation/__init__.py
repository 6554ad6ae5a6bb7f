"""Verification: a trained run and the baselines scored by the same code on the same cases.

`metrics` (scores accumulated as cases stream), `baselines` (the registry), `cases` (test split,
hindcast, Moving MNIST), `scoring`, `document` (`metrics.json`), `skill`, `figures`, `report`
(HTML and Markdown) and `evaluate`, the job that runs them in that order.
"""
