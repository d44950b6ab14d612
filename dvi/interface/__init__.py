"""The command line (``python -m dvi``): parsing options and files, writing outputs, reporting."""
