"""Read finished runs' files into learning curves, tables and paired tests
(``python -m utils.report RESULTS_DIR``). Imports ``utils.runs`` and the leaves only."""
