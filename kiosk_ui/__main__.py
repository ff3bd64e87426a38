"""``python -m kiosk_ui --node http://127.0.0.1:8401 [--fullscreen] [--lang en]``"""

from __future__ import annotations

import argparse
import logging

from ui_common.cli import add_common_args, configure_kivy, launch

__all__ = ["configure_kivy", "main", "parse_args"]  # configure_kivy: bench/bench_ui.py imports it here


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kiosk_ui", description="SmartQ kiosk UI")
    add_common_args(p, node="http://127.0.0.1:8401", size="800x1280",
                    size_help="window size WxH when not fullscreen",
                    lang_help="default language: en fr rw sw es")
    p.add_argument("--phone-region", default="RW", help="region for local phone numbers")
    p.add_argument("--idle", type=float, default=45.0, help="seconds before going back to start")
    p.add_argument("--print-watch", type=float, default=8.0,
                   help="seconds to wait for the printer to confirm a ticket before telling the "
                        "citizen to note the number on screen")
    p.add_argument("--audio-engine", choices=("espeak-ng", "none"), default="espeak-ng",
                   help="speech engine of the audio guidance (the display announcer's)")
    p.add_argument("--audio-sink", choices=("player", "wav", "silent"), default="player",
                   help="where guidance is played: the speakers (aplay/paplay), a WAV file, nowhere")
    p.add_argument("--audio-wav", metavar="PATH", help="with --audio-sink wav: append the sound here")
    p.add_argument("--autopilot", type=float, default=0, metavar="S",
                   help="demo: a simulated citizen takes a ticket by touching this window about "
                        "every S seconds (0: never)")
    return p.parse_args(argv)


def guide(args: argparse.Namespace) -> object | None:
    """The audio guidance speaker, or None (silent) when this machine cannot speak."""
    from hardware.errors import AnnouncerError
    from hardware.guidance import build_guide

    try:
        return build_guide(args.audio_engine, args.audio_sink, args.audio_wav)
    except AnnouncerError as err:
        logging.getLogger("kiosk_ui").warning("audio guidance stays silent: %s", err)
        return None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def start() -> None:
        from .app import build, run

        app, client = build(args.node, language=args.lang, phone_region=args.phone_region,
                            speaker=guide(args),
                            idle_timeout_s=args.idle, print_watch_s=args.print_watch,
                            screenshot_dir=args.screenshot_dir,
                            screenshot_every=args.screenshot_every)
        extra = []
        if args.autopilot > 0:
            from .autopilot import Autopilot

            extra.append(Autopilot(app, args.autopilot).run())
        await run(app, client, *extra, data_dir=args.data_dir)

    launch(args, "SmartQ kiosk", start)


if __name__ == "__main__":
    main()
