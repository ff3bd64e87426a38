"""``python -m display_ui --node http://127.0.0.1:8402 [--fullscreen] [--size 1280x720]``"""

from __future__ import annotations

import argparse

from ui_common.cli import add_common_args, launch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m display_ui", description="SmartQ waiting-room display")
    add_common_args(p, node="http://127.0.0.1:8402", size="1920x1080",
                    size_help="1920x1080 or 1280x720 (any WxH works)",
                    lang_help="language of the screen and service names: en fr rw sw es")
    p.add_argument("--notice", action="append", default=[], help="a ticker notice (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def start() -> None:
        from .app import build, run

        app, client = build(args.node, notices=args.notice, language=args.lang,
                            screenshot_dir=args.screenshot_dir, screenshot_every=args.screenshot_every)
        await run(app, client)

    launch(args, "SmartQ display", start)


if __name__ == "__main__":
    main()
