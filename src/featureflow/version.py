__version__ = "0.1.0.dev0"
FORMAT_VERSION = 1
"""Version of the on-disk format written by ``save_pretrained``; bumped on incompatible change."""
