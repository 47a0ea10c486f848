"""A real Prometheus server (the Debian binary, scripts/install_prometheus.sh) for tests: on a
free loopback port, with a temporary storage directory, scraping only loopback targets.

The configuration is derived from the committed deploy/prometheus/prometheus.yml (same job
names, which the alert rules and dashboards select on) with test targets and 1 s intervals;
the rules are the committed alerts.yml with `for:` durations shortened and, where a test says
so, a threshold replaced (each replacement must match exactly once, so drift in alerts.yml
breaks the test instead of silently testing something else).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import yaml

from loadtest.promapi import PrometheusAPI
from loadtest.threaded import free_port

REPO = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
START_TIMEOUT_S = 30.0


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def config_for_test(targets: Mapping[str, list[str]], rule_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with `targets` per job name and 1 s intervals."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(
        {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
    )
    config["rule_files"] = [str(rule_file)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(targets) <= set(jobs), f"unknown jobs {set(targets) - set(jobs)}"
    for name, job in jobs.items():
        job["static_configs"] = [{"targets": list(targets.get(name, []))}]
    return config


def rules_for_test(
    for_duration: str = "2s", replace: Mapping[str, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """alerts.yml with every `for:` set to `for_duration` and `replace[alert] = (old, new)`
    applied to that alert's expression (old must occur exactly once)."""
    rules: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    pending = dict(replace or {})
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            rule["for"] = for_duration
            if rule["alert"] in pending:
                old, new = pending.pop(rule["alert"])
                assert rule["expr"].count(old) == 1, f"{rule['alert']}: {old!r} not found once"
                rule["expr"] = rule["expr"].replace(old, new)
    assert not pending, f"no such alerts: {sorted(pending)}"
    return rules


def alert_names() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r]


class PrometheusServer:
    """`with PrometheusServer(tmp, targets, rules) as prom:` then `prom.api.query(...)`."""

    def __init__(self, tmp: Path, targets: Mapping[str, list[str]], rules: dict[str, Any]) -> None:
        binary = prometheus_binary()
        assert binary is not None, "prometheus is not installed (scripts/install_prometheus.sh)"
        self.binary = binary
        self.dir = tmp
        self.dir.mkdir(parents=True, exist_ok=True)
        rule_file = self.dir / "rules.yml"
        rule_file.write_text(yaml.safe_dump(rules, sort_keys=False))
        self.config_file = self.dir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config_for_test(targets, rule_file)))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = PrometheusAPI(self.url)
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "prometheus.log"

    def __enter__(self) -> PrometheusServer:
        with self.log.open("wb") as out:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.__exit__()
                raise TimeoutError("prometheus did not become ready")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.api.close()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wait_until(self, ready: Any, timeout_s: float, poll_s: float = 0.5) -> bool:
        """Poll `ready()` until it is true or `timeout_s` passes; its last answer."""
        deadline = time.monotonic() + timeout_s
        while True:
            if ready():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
