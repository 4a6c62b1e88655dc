"""Reports from the results store: Pareto fronts, best-config tables, plots.

Pure Python + numpy + matplotlib + plotly: nothing here imports Ray except `callback`
(the Tune callback that refreshes the report during a sweep), which is imported on its own.
"""
