"""Running fits: the LightningModule, one fit with its restart rule, tiles, batches and memory budgets.

Uses :mod:`dvi.method`; reads no files and parses no options.
"""
