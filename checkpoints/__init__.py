"""The shipped priors as package data: eight BF-DnCNN files (the full and the light set), MANIFEST.json
(sha256 and metadata) and CORPUS.csv.

Nothing here is code; the package exists so that a wheel or a non-editable install carries these files
and ``importlib.resources.files("checkpoints")`` finds them (see ``common.prior_files.default_checkpoint_dir``).
"""
