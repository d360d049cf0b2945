"""Batch encoding and decoding behind ``raqcodec encode`` / ``raqcodec decode`` (``run``)."""
