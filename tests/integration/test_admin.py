"""The admin API over real HTTP: simulated engines, a gateway, a real store on disk."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from loadtest.simengine import SimEngineServer
from server.app import ROUTERS
from server.serving.auth import actor_for
from server.store.layout import ValidationLimits
from server.store.manifest import EvalReport
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, make_peft_dir, manifest_fields
from tests.integration.conftest import ADMIN_TOKEN
from tests.servers import GatewayServer

Start = Callable[..., tuple[GatewayServer, list[SimEngineServer]]]
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def call(gw: GatewayServer, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{gw.url}/admin{path}", headers=AUTH, timeout=30, **kw)


def complete(gw: GatewayServer, model: str, user: str | None = None) -> httpx.Response:
    body = {"model": model, "prompt": "hi", "max_tokens": 2, **({"user": user} if user else {})}
    return httpx.post(f"{gw.url}/v1/completions", json=body, timeout=30)


def served_by(gw: GatewayServer, model: str, user: str | None = None) -> str:
    """The version that answered (the simulated engine's text starts with `[name@version]`)."""
    response = complete(gw, model, user)
    assert response.status_code == 200, response.text
    version = response.headers["x-adapter-version"]
    assert response.json()["choices"][0]["text"].startswith(f"[{version}]")
    return version


def sim_stats(sim: SimEngineServer) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{sim.url}/sim/stats").json()
    return stats


def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, "condition not reached in time"
        time.sleep(0.05)
    return time.monotonic() - start


def add_evals(store: AdapterStore, name: str, **scores: float) -> None:
    for version, score in scores.items():
        report = EvalReport(dataset="heldout", metric="exact_match", score=score, n=50)
        store.add_eval(name, version, report, actor="ci")


def package_elsewhere(tmp: Path, name: str, version: str, r: int = 4, **fields: Any) -> Path:
    """A version packaged in a scratch store (as a CI job would), ready to upload or copy."""
    scratch = AdapterStore(tmp / "scratch", TINY_SPEC, ValidationLimits(max_lora_rank=64))
    src = make_peft_dir(tmp / f"peft-{name}-{version}-{r}", r=r, seed=9)
    return scratch.package(src, manifest_fields(**fields), name=name, version=version).path


def upload(gw: GatewayServer, name: str, directory: Path, version: str) -> httpx.Response:
    files = [("file", (p.name, p.read_bytes())) for p in sorted(directory.iterdir())]
    return httpx.post(
        f"{gw.url}/admin/adapters/{name}/versions",
        headers=AUTH,
        data={"version": version},
        files=files,
        timeout=30,
    )


def tree(root: Path) -> dict[str, bytes]:
    """The store's files, without the engines' swap lock files (gateway bookkeeping)."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"/"
        for p in sorted(root.rglob("*"))
        if not str(p.relative_to(root)).startswith(".engine-locks")
    }


def test_every_admin_route_needs_the_admin_token(admin_gateway: Start) -> None:
    gw, _ = admin_gateway()
    routes = [
        (method, route.path)
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and route.path.startswith("/admin")
        for method in sorted(route.methods or ())
    ]
    assert len(routes) == 11
    public = httpx.get(f"{gw.url}/openapi.json").json()["paths"]
    assert not [path for path in public if path.startswith("/admin")]  # not listed publicly
    tenant_style = f"Bearer sk-{secrets.token_hex(16)}"
    for method, path in routes:
        url = gw.url + path.format(name="alpha", version="v1")
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": tenant_style}):
            r = httpx.request(method, url, headers=headers, json={"version": "v2", "weight": 0})
            assert r.status_code == 401, (method, path, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
    assert call(gw, "GET", "/audit").json()["entries"][-1]["actor"] == "setup"  # nothing changed

    closed, _ = admin_gateway(settings={"admin_token": None})
    r = httpx.get(f"{closed.url}/admin/adapters", headers=AUTH)
    assert r.status_code == 403
    assert r.json()["error"]["message"] == "admin API disabled: set LORAGATE_ADMIN_TOKEN"


def test_promotion_prewarms_and_rollback_is_a_pointer_flip(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, (sim,) = admin_gateway(load_ms=200)  # a hidden cold load would be visible
    assert served_by(gw, "alpha") == "alpha@v2"
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    add_evals(tiny_store, "alpha", v2=0.70, v3=0.80)

    promoted = call(gw, "POST", "/adapters/alpha/promote", json={"version": "v3"})

    assert promoted.status_code == 200, promoted.text
    body = promoted.json()
    assert body["prewarmed"] == ["engine-0"] and body["prewarm_ms"] >= 150  # the load was here
    assert (body["channels"]["stable"], body["channels"]["previous"]) == ("v3", "v2")
    assert body["gate"]["passed"] and not body["forced"]
    loads = sim_stats(sim)["loads"]
    assert served_by(gw, "alpha") == "alpha@v3"
    assert sim_stats(sim)["loads"] == loads  # the first request after promotion: no load

    rolled = call(gw, "POST", "/adapters/alpha/rollback")

    assert rolled.status_code == 200, rolled.text
    back = rolled.json()
    assert (back["channels"]["stable"], back["channels"]["previous"]) == ("v2", None)
    assert back["not_resident"] == [] and 0 < back["switch_ms"] < 2000
    assert served_by(gw, "alpha") == "alpha@v2"
    stats = sim_stats(sim)
    assert (stats["loads"], stats["unloads"]) == (loads, 0)  # rollback loaded nothing
    assert gw.metric("loragate_rollbacks_total", adapter="alpha") == 1
    assert (
        gw.metric("loragate_active_version_info", adapter="alpha", version="v2", channel="stable")
        == 1
    )
    again = call(gw, "POST", "/adapters/alpha/rollback")
    assert again.status_code == 409 and "no previous version" in again.json()["error"]["message"]


def test_promotion_is_refused_or_allowed_by_the_eval_numbers(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()
    for version, seed in (("v3", 3), ("v4", 4)):
        add_version(tiny_store, tmp_path, "alpha", version, seed=seed)
    add_version(tiny_store, tmp_path, "beta", "v2", seed=2)
    add_evals(tiny_store, "alpha", v2=0.70, v3=0.65, v4=0.75)
    add_evals(tiny_store, "beta", v1=0.5)

    refused = call(gw, "POST", "/adapters/alpha/promote", json={"version": "v3"})
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "promotion_refused"
    assert "0.6500" in error["message"] and "0.7000" in error["message"]
    no_eval = call(gw, "POST", "/adapters/beta/promote", json={"version": "v2"})
    assert no_eval.status_code == 409 and "no gate dataset" in no_eval.json()["error"]["message"]
    no_eval = call(
        gw, "POST", "/adapters/beta/promote", json={"version": "v2", "dataset": "heldout"}
    )
    assert "has no eval on gate dataset 'heldout'" in no_eval.json()["error"]["message"]

    allowed = call(gw, "POST", "/adapters/alpha/promote", json={"version": "v4"})
    assert allowed.status_code == 200 and not allowed.json()["forced"]
    forced = call(gw, "POST", "/adapters/alpha/promote", json={"version": "v3", "force": True})
    assert forced.status_code == 200 and forced.json()["forced"]

    entries = call(gw, "GET", "/audit", params={"limit": 2}).json()["entries"]
    assert [(e["action"], e["from_version"], e["to_version"], e["forced"]) for e in entries] == [
        ("promote", "v2", "v4", False),
        ("promote", "v4", "v3", True),
    ]
    assert {e["actor"] for e in entries} == {actor_for(ADMIN_TOKEN)}
    assert gw.metric("loragate_promotions_total", adapter="alpha", forced="true") == 1
    assert gw.metric("loragate_promotions_total", adapter="alpha", forced="false") == 1


def test_canary_share_is_sticky_by_user_over_http(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, (sim,) = admin_gateway()
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)

    started = call(gw, "POST", "/adapters/alpha/canary", json={"version": "v3", "weight": 0.5})

    assert started.status_code == 200, started.text
    assert (
        started.json()["prewarmed"] == ["engine-0"] and "alpha@v3" in sim_stats(sim)["registered"]
    )
    seen = {f"u{i}": served_by(gw, "alpha", f"u{i}") for i in range(12)}
    assert set(seen.values()) == {"alpha@v2", "alpha@v3"}
    assert all(served_by(gw, "alpha", user) == version for user, version in seen.items())
    ended = call(gw, "POST", "/adapters/alpha/canary", json={"weight": 0})
    assert ended.json()["channels"]["canary"] is None
    assert {served_by(gw, "alpha", user) for user in seen} == {"alpha@v2"}


def test_an_uploaded_version_is_servable_without_restart(
    admin_gateway: Start, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()

    created = upload(gw, "alpha", package_elsewhere(tmp_path, "alpha", "v3"), "v3")

    assert created.status_code == 201, created.text
    assert served_by(gw, "alpha@v3") == "alpha@v3"
    listing = call(gw, "GET", "/adapters").json()
    alpha = next(a for a in listing["adapters"] if a["name"] == "alpha")
    v3 = next(v for v in alpha["versions"] if v["version"] == "v3")
    assert (v3["validation"], v3["resident_on"]) == ("valid", ["engine-0"])
    assert call(gw, "GET", "/audit", params={"limit": 1}).json()["entries"][0]["action"] == (
        "register"
    )
    again = upload(gw, "alpha", package_elsewhere(tmp_path / "2", "alpha", "v3"), "v3")
    assert again.status_code == 409 and again.json()["error"]["code"] == "version_exists"

    # A brand-new adapter: with no stable, the gate compares with the base model's score.
    report = {
        "dataset": "heldout",
        "metric": "exact_match",
        "score": 0.6,
        "n": 20,
        "baseline_score": 0.3,
    }
    delta = package_elsewhere(tmp_path / "3", "delta", "v1", eval=report)
    assert upload(gw, "delta", delta, "v1").status_code == 201
    promoted = call(gw, "POST", "/adapters/delta/promote", json={"version": "v1"})
    assert promoted.status_code == 200 and "beats baseline's 0.3000" in promoted.json()["detail"]
    assert served_by(gw, "delta") == "delta@v1"


def _tamper_weights(d: Path) -> None:
    data = bytearray((d / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (d / "adapter_model.safetensors").write_bytes(bytes(data))


BROKEN: list[tuple[str, str, dict[str, Any], Callable[[Path], object], str, str]] = [
    ("checksum", "v3", {}, _tamper_weights, "adapter_model.safetensors", "checksum"),
    ("rank", "v3", {"r": 16}, lambda d: None, "adapter_config.json", "rank"),
    (
        "pickle",
        "v3",
        {},
        lambda d: (d / "adapter_model.bin").write_bytes(b"\x80\x04"),
        "adapter_model.bin",
        "no-pickle",
    ),
    ("identity", "v4", {}, lambda d: None, "manifest.json", "manifest-identity"),
]


def test_broken_uploads_are_refused_with_their_rule_and_leave_nothing(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()
    before = tree(tiny_store.root)
    for case, version, kw, mutate, file, rule in BROKEN:
        for name in ("alpha", "zeta"):  # an existing adapter, and a new one
            src = package_elsewhere(tmp_path / case / name, name, "v3", **kw)
            mutate(src)
            refused = upload(gw, name, src, version)
            assert refused.status_code == 400, (case, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "adapter_invalid"
            assert error["message"].startswith(f"{file}: [{rule}]"), error["message"]
            assert tree(tiny_store.root) == before, case

    small, _ = admin_gateway(settings={"max_upload_bytes": 2000})
    too_big = upload(small, "alpha", package_elsewhere(tmp_path / "big", "alpha", "v3"), "v3")
    assert too_big.status_code == 413 and tree(tiny_store.root) == before


def test_a_half_copied_version_is_refused_clearly_until_the_copy_completes(
    admin_gateway: Start, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()
    source = package_elsewhere(tmp_path, "alpha", "v3")
    target = gw.settings.store / "alpha" / "v3"
    target.mkdir()
    shutil.copyfile(source / "adapter_config.json", target / "adapter_config.json")
    weights = (source / "adapter_model.safetensors").read_bytes()
    (target / "adapter_model.safetensors").write_bytes(weights[: len(weights) // 2])
    ready = f"{gw.url}/readyz"
    wait_until(lambda: httpx.get(ready).json()["broken_store_entries"] == 1)  # no manifest yet
    assert complete(gw, "alpha@v3").status_code == 404

    shutil.copyfile(source / "manifest.json", target / "manifest.json")
    wait_until(lambda: complete(gw, "alpha@v3").status_code != 404)  # seen by the next poll

    response = complete(gw, "alpha@v3")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "version_not_ready"
    assert "adapter_model.safetensors: [checksum]" in error["message"]
    (target / "adapter_model.safetensors").write_bytes(weights)  # the copy completes
    assert served_by(gw, "alpha@v3") == "alpha@v3"


def test_register_in_place_validates_a_copied_directory(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, _ = admin_gateway()
    shutil.copytree(package_elsewhere(tmp_path, "alpha", "v3"), tiny_store.root / "alpha" / "v3")
    broken = tiny_store.root / "alpha" / "v4"
    shutil.copytree(package_elsewhere(tmp_path / "4", "alpha", "v4"), broken)
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA"}')

    assert call(gw, "POST", "/adapters/alpha/versions", json={"version": "v3"}).status_code == 201
    refused = call(gw, "POST", "/adapters/alpha/versions", json={"version": "v4"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"].startswith("adapter_config.json: [checksum]")
    assert broken.is_dir()  # in place: the operator's directory is left as it is
    typo = call(gw, "POST", "/adapters/alpha/versions", json={"versoin": "v3"})
    assert typo.status_code == 400


def test_two_gateways_sharing_a_store_converge(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    a, _ = admin_gateway()
    b, _ = admin_gateway()
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    add_evals(tiny_store, "alpha", v2=0.70, v3=0.80)
    assert served_by(b, "alpha") == "alpha@v2"

    assert call(a, "POST", "/adapters/alpha/promote", json={"version": "v3"}).status_code == 200
    wait_until(lambda: served_by(b, "alpha") == "alpha@v3", timeout_s=3)
    assert call(b, "POST", "/adapters/alpha/rollback").status_code == 200
    wait_until(lambda: served_by(a, "alpha") == "alpha@v2", timeout_s=3)

    actions = [e["action"] for e in call(a, "GET", "/audit", params={"limit": 2}).json()["entries"]]
    assert actions == ["promote", "rollback"]


def test_a_crash_while_writing_channels_keeps_the_old_ones(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, _ = admin_gateway()
    add_version(tiny_store, tmp_path, "alpha", "v3", seed=3)
    add_evals(tiny_store, "alpha", v2=0.70, v3=0.80)
    channels = tiny_store.root / "alpha" / "channels.json"
    before = channels.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    failed = call(gw, "POST", "/adapters/alpha/promote", json={"version": "v3"})
    monkeypatch.undo()

    assert failed.status_code == 500 and failed.json()["error"]["code"] == "store_error"
    assert "power lost" in failed.json()["error"]["message"]
    assert channels.read_bytes() == before
    assert not [p for p in channels.parent.iterdir() if ".tmp-" in p.name]
    assert served_by(gw, "alpha") == "alpha@v2"
    assert call(gw, "POST", "/adapters/alpha/promote", json={"version": "v3"}).status_code == 200


def test_pin_prewarm_retire_over_http(
    admin_gateway: Start, tiny_store: AdapterStore, tmp_path: Path
) -> None:
    gw, (sim,) = admin_gateway()
    add_version(tiny_store, tmp_path, "beta", "v2", seed=2)
    pinned = call(gw, "POST", "/adapters/beta/versions/v2/pin")
    assert pinned.status_code == 200 and pinned.json()["channels"]["pinned"] == ["v2"]
    assert "beta@v2" in sim_stats(sim)["registered"]  # pinned versions are prewarmed
    warm = call(gw, "POST", "/adapters/gamma/versions/v1/prewarm")
    assert warm.status_code == 200 and warm.json()["engines"] == ["engine-0"]

    for path, why in (
        ("/adapters/beta/versions/v2", "pinned"),
        ("/adapters/alpha/versions/v1", "stable, previous, canary or shadow"),
    ):
        refused = call(gw, "DELETE", path)
        assert refused.status_code == 409 and why in refused.json()["error"]["message"]
    assert call(gw, "POST", "/adapters/beta/versions/v2/unpin").status_code == 200
    retired = call(gw, "DELETE", "/adapters/beta/versions/v2")

    assert retired.status_code == 200, retired.text
    kept = tiny_store.root / "beta" / retired.json()["retired_to"]
    assert kept.name.startswith(".retired-v2-") and (kept / "manifest.json").exists()
    assert complete(gw, "beta@v2").status_code == 404
    assert "beta@v2" not in sim_stats(sim)["registered"]
    entries = call(gw, "GET", "/audit", params={"limit": 3}).json()["entries"]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in entries] == [
        ("pin", None, "v2"),
        ("unpin", "v2", None),
        ("retire", "v2", None),
    ]
