"""``python -m raqcodec`` and the ``raqcodec`` console script.

Signal handling comes first, before click, numpy or torch are imported (``raqcodec.interrupts``): an
interrupt at any moment of start-up exits cleanly with 128 + the signal.
"""

from .interrupts import exit_on_signals


def run() -> None:
    exit_on_signals()
    from .cli import main

    main()


if __name__ == "__main__":
    run()
