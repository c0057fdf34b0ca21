"""The `tts-pipeline` command line (click). Audio goes to stdout; everything else to stderr."""
from __future__ import annotations

import sys

import click


def log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Streaming Chatterbox text-to-speech: T3 -> CFM -> HiFiGAN over ZeroMQ."""


@main.command()
def selfcheck() -> None:
    """Round-trip every wire message kind over ipc:// and tcp://, and time a message."""
    from ipc.schema import KINDS
    from ipc.selfcheck import round_trip_all, time_round_trips

    for transport in ("ipc", "tcp"):
        ok = round_trip_all(transport)
        log(f"selfcheck: {ok}/{len(KINDS)} message kinds round-tripped over {transport}://")
        if ok != len(KINDS):
            sys.exit(1)
    for size, label in ((0, "header-only"), (1 << 20, "1 MiB tensor")):
        t = time_round_trips(size, 200)
        log(f"selfcheck: {label} message encode+send+recv+decode: median {t['median_s'] * 1e6:.0f} us")
    log("selfcheck: wire protocol OK")
