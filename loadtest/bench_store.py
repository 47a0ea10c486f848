"""Benchmark: scanning a store of many versions (manifests only) vs deep-validating one.

    python -m loadtest.bench_store --versions 10000 --out loadtest/results/store_scan.json

Builds a synthetic store in a temp dir (one real packaged version, its manifest copied to the
others), then times a cold scan (a fresh AdapterStore: every manifest parsed; files in the page
cache), a rescan (what a gateway does after any store change: unchanged versions reused, one
stat each), and a deep validation (cold, then cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from server.cli.main import load_base
from server.store.layout import ValidationLimits
from server.store.store import AdapterStore


def build(root: Path, versions: int, per_adapter: int) -> AdapterStore:
    from tests.factory import make_peft_dir, manifest_fields

    base = load_base(None, "demo-base")
    store = AdapterStore(root, base, ValidationLimits(max_lora_rank=8))
    src = make_peft_dir(root.parent / "peft", spec=base, r=8)
    first = store.package(src, manifest_fields(base), name="a0", version="v1")
    raw = json.loads((first.path / "manifest.json").read_text())
    for i in range(versions):
        name, version = f"a{i // per_adapter}", f"v{i % per_adapter + 1}"
        d = root / name / version
        if not d.exists():
            d.mkdir(parents=True)
            (d / "manifest.json").write_text(json.dumps({**raw, "name": name, "version": version}))
    return store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--per-adapter", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("loadtest/results/store_scan.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "store", args.versions, args.per_adapter)
        cold, rescans = [], []
        for _ in range(args.repeat):
            fresh = AdapterStore(store.root, store.base, store.limits)
            t0 = time.perf_counter()
            snap = fresh.scan()
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fresh.scan()
            rescans.append(time.perf_counter() - t0)
        assert snap.version_count() == args.versions, snap.version_count()
        store.scan()
        t0 = time.perf_counter()
        store.validate("a0", "v1")
        deep_cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        store.validate("a0", "v1")
        deep_cached = time.perf_counter() - t0
    result = {
        "versions": args.versions,
        "cold_scan_seconds_median": round(statistics.median(cold), 4),
        "cold_scan_versions_per_second": round(args.versions / statistics.median(cold)),
        "rescan_seconds_median": round(statistics.median(rescans), 4),
        "deep_validate_seconds_cold": round(deep_cold, 4),
        "deep_validate_seconds_cached": round(deep_cached, 6),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
