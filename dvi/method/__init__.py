"""The method itself (docs/method.md): networks, variational family, ELBO, score unit, noise level.

Pure PyTorch; nothing here knows about Lightning, files or the command line.
"""
