"""The ``raqcodec`` command line (``commands``)."""
