"""Reports from the results store: Pareto fronts, best-config tables, plots.

Pure Python + numpy + matplotlib + plotly: nothing here imports Ray (the Tune callback that
refreshes a report during a sweep is raydaa.sweep.report_refresh).
"""
