"""Sweeps: many ordinary training runs from one TOML file, placed by Ray Tune, and their tables.

sweep        the spec, its trials, running them (resumable), collecting their rows
ray_session  starting or joining Ray, sizing trials to its nodes, leaving no Ray process behind
results      results.csv / results.md, the spread over seeds, the comparison to the baseline, the Pareto front
"""
