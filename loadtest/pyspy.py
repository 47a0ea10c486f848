"""py-spy profiles of an engine process: record one, and reduce its raw (collapsed) stacks to
the shares that matter for a model step.

`py-spy record --format raw` writes one line per distinct stack: `frame;frame;... count`, with
frames as `function (file:line)`, outermost first. Shares here are of the samples whose stack
passes through `root` (a worker's `execute_model`: one engine step), so idle time is left out.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")


def record(pid: int, out: Path, seconds: float, rate: int = 200) -> subprocess.Popen[bytes]:
    """Start `py-spy record` on `pid` for `seconds` (sampling without pausing it); wait on the
    returned process. py-spy comes from PyPI (`pip install py-spy`) and needs ptrace rights."""
    py_spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen(
        [str(py_spy), "record", "-p", str(pid), "-r", str(rate), "-d", str(int(seconds)),
         "-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _frame(raw: str) -> str:
    """`Class.func (site-packages/vllm/x/y.py:12)` → `Class.func (y.py)`."""
    name, _, where = raw.partition(" (")
    return f"{name} ({Path(_LINE_NO.sub('', '(' + where).strip('()')).name})"


def summarize(raw: str, root: str, functions: tuple[str, ...], top: int = 12) -> dict[str, object]:
    """Samples under `root`; inclusive share (%) of each function in `functions` (matched on
    the end of the frame's function name, so `add_lora_linear` finds the method whatever its
    class); the `top` frames by self time (%)."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        names = [f.partition(" (")[0] for f in frames]
        if not any(n.endswith(root) for n in names):
            continue
        total += int(count)
        own[frames[-1]] += int(count)
        for function in functions:
            if any(n.endswith(function) for n in names):
                inclusive[function] += int(count)

    def share(n: int) -> float:
        return round(100 * n / total, 1) if total else 0.0

    return {
        "samples": total,
        "inclusive_pct": {f: share(inclusive[f]) for f in functions},
        "top_self_pct": [[frame, share(n)] for frame, n in own.most_common(top)],
    }
