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
    p.add_argument("--cycle-languages", type=languages, default=None, metavar="LANGS",
                   help="languages the screen takes in turn, e.g. rw,en,fr (default: the branch's "
                        "languages; 'off': only --lang)")
    p.add_argument("--cycle-every", type=float, default=10.0, metavar="S", help="seconds per language")
    p.add_argument("--direction", action="append", default=[], type=direction, metavar="COUNTER=TEXT",
                   help='where a counter is, shown after its name, e.g. c1="→ left" (repeatable)')
    return p.parse_args(argv)


def languages(text: str) -> list[str]:
    from ui_common.languages import LANGUAGES

    if text == "off":
        return []
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in LANGUAGES]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"expected languages among {','.join(LANGUAGES)} or 'off', got {text!r}")
    return out


def direction(text: str) -> tuple[str, str]:
    counter, sep, hint = text.partition("=")
    if not sep or not counter.strip() or not hint.strip():
        raise argparse.ArgumentTypeError(f'expected COUNTER=TEXT such as c1="→ left", got {text!r}')
    return counter.strip(), hint.strip()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    async def start() -> None:
        from .app import build, run

        app, client = build(args.node, notices=args.notice, language=args.lang,
                            cycle_languages=args.cycle_languages, cycle_s=args.cycle_every,
                            directions=dict(args.direction),
                            screenshot_dir=args.screenshot_dir, screenshot_every=args.screenshot_every)
        await run(app, client, data_dir=args.data_dir)

    launch(args, "SmartQ display", start)


if __name__ == "__main__":
    main()
