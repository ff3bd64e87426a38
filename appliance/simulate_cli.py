"""`smartq simulate SCENARIO.toml --out DIR [--seed N]`: runs the scenario, prints the summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from appliance.scenario import ScenarioError, load_scenario
from appliance.simulate import DayResult, simulate


def run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as err:
        print(f"smartq simulate: {err}", file=sys.stderr)
        return 2

    def progress(day: DayResult) -> None:
        print(f"{day.day} {day.kind}: {len(day.people)} tickets", file=sys.stderr, flush=True)

    try:
        summary = simulate(scenario, Path(args.out), seed=args.seed, progress=progress)
    except OSError as err:
        print(f"smartq simulate: {err}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0
