from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(1, str(Path(__file__).parents[2] / "uplink"))  # linktest: HQ process, enrolled sample branch
sys.path.insert(2, str(Path(__file__).parents[2] / "appliance"))  # procs.NodeProcess
