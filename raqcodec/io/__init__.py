"""Everything raqcodec reads and writes: source images (``images``, with ``png16`` and ``metadata``), decoded
images (``writing``), output formats (``formats``), the ``.raq`` container and its one bounded reader
(``bitstream``), the one atomic writer (``atomic``) and the one rule for finding input files (``finder``).

Nothing here imports torch.
"""
