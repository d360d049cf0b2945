"""The ``raqcodec`` command group: every failure one line on stderr, with a stable exit status."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..io.bitstream import FORMAT_VERSION, READ_VERSIONS, REFINED_VERSION

EXIT_FAILED = 1  # at least one input could not be processed
EXIT_USAGE = 2  # a request that cannot be right (click's usage errors too)
EXIT_INTERNAL = 70  # a bug: unexpected exception
EXIT_PIPE = 128 + 13  # stdout was closed by its reader (`| head -1`), as if killed by SIGPIPE


# Lines go to sys.stderr as it is when they are printed, not click's err=True stream: while a progress
# display is live, sys.stderr is rich's proxy, which prints them above it (click's own stream would wrap
# the proxy's binary buffer and write into the middle of the display).


def _say_error(message: str) -> None:
    click.echo(f"raqcodec: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    click.echo(f"raqcodec: note: {message}", file=sys.stderr)


def _stdout_closed() -> None:
    """The reader of stdout went away: stop quietly. stdout now points at /dev/null so that the flush at
    interpreter exit cannot complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(EXIT_PIPE)


class _Group(click.Group):
    """Every failure is one line on stderr: click's usage errors (exit 2), user errors (exit 1) and
    unexpected exceptions (exit 70, no traceback unless RAQCODEC_DEBUG is set). A closed stdout is silent."""

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name or "raqcodec", complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()  # a closed pipe shows here rather than at interpreter exit
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `raqcodec`: the help, as it is written
            click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message(), err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            hint = " (see --help)" if isinstance(exc, click.UsageError) else ""
            _say_error(exc.format_message().replace("\n", " ") + hint)
            sys.exit(exc.exit_code)
        except click.Abort:
            _say_error("aborted")
            sys.exit(1)
        except BrokenPipeError:
            _stdout_closed()
        sys.exit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:
            _stdout_closed()
        except KeyboardInterrupt:
            _say_error("interrupted")
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if os.environ.get("RAQCODEC_DEBUG"):
                raise
            _say_error(f"internal error ({type(exc).__name__}: {exc}); rerun with RAQCODEC_DEBUG=1 for details")
            sys.exit(EXIT_INTERNAL)


_VERSION = (
    f"raqcodec %(version)s (.raq format: writes version {REFINED_VERSION} with the default model, "
    f"{FORMAT_VERSION} with a model that has no residual stage; reads versions {', '.join(map(str, READ_VERSIONS))})"
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raqcodec", message=_VERSION)
def main() -> None:
    """raqcodec: one VQ-VAE model, any bitrate (Rate-Adaptive Quantization + rANS).

    \b
    raqcodec encode --bpp 0.3 photo.png        # -> photo.raq, at most 0.3 bits per pixel
    raqcodec decode photo.raq -o photo-raq.png # -> photo-raq.png (photo.png is the original)
    raqcodec info photo.raq                    # header, size, bpp
    """
