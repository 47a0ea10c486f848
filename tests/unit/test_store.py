from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import AdapterInvalid, NotFound, StoreError, VersionExists
from server.store.layout import ValidationLimits
from server.store.manifest import Canary, Channels, EvalReport
from server.store.store import AdapterStore
from tests.factory import TINY_SPEC, add_version, make_peft_dir, manifest_fields


def test_package_registers_an_immutable_checksummed_version(
    store: AdapterStore, tmp_path: Path
) -> None:
    v = add_version(store, tmp_path, "sentiment", "v1", notes="first")
    assert v.engine_name == "sentiment@v1"
    manifest = json.loads((v.path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert manifest["base_model"]["config_sha256"] == TINY_SPEC.config_sha256
    assert store.snapshot.adapters["sentiment"].versions["v1"].manifest.notes == "first"
    assert [e.action for e in store.audit()] == ["register"]
    assert not [p for p in (store.root / "sentiment").iterdir() if p.name.startswith(".staging")]


def test_registering_a_version_twice_is_refused(store: AdapterStore, tmp_path: Path) -> None:
    add_version(store, tmp_path, "qa", "v1")
    with pytest.raises(VersionExists):
        add_version(store, tmp_path, "qa", "v1", seed=9)


def test_failed_package_leaves_no_trace(store: AdapterStore, tmp_path: Path) -> None:
    src = make_peft_dir(tmp_path / "peft", r=16)  # over max_lora_rank=8
    with pytest.raises(AdapterInvalid, match=r"\[rank\]"):
        store.package(src, manifest_fields(), name="newname", version="v1")
    assert list(store.root.iterdir()) == []


def test_package_refuses_pickle_only_training_output(store: AdapterStore, tmp_path: Path) -> None:
    src = tmp_path / "peft"
    src.mkdir()
    (src / "adapter_config.json").write_text("{}")
    (src / "adapter_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(AdapterInvalid, match="no-pickle"):
        store.package(src, manifest_fields(), name="x", version="v1")


def test_scan_reports_broken_entries_and_keeps_healthy_ones(
    store: AdapterStore, tmp_path: Path
) -> None:
    add_version(store, tmp_path, "good", "v1")
    add_version(store, tmp_path, "good", "v2")
    (store.root / "Bad Name").mkdir()
    (store.root / "good" / "v3").mkdir()  # half-copied: no manifest yet
    (store.root / "good" / "latest").mkdir()  # not a version spelling
    add_version(store, tmp_path, "chan", "v1")
    (store.root / "chan" / "channels.json").write_text('{"stable": "v7"}')

    snap = store.scan()

    assert list(snap.adapters) == ["good"]
    assert list(snap.adapters["good"].versions) == ["v1", "v2"]
    broken = {b.path: b.error for b in snap.broken}
    assert set(broken) == {"Bad Name", "good/v3", "good/latest", "chan"}
    assert "missing" in broken["good/v3"]
    assert "unknown versions ['v7']" in broken["chan"]


def test_scan_of_many_versions_reads_manifests_only(tmp_path: Path) -> None:
    """10,000 versions scan (benchmarked in loadtest/bench_store.py); here: correctness."""
    store = AdapterStore(tmp_path / "s", TINY_SPEC)
    first = add_version(store, tmp_path, "a0", "v1")
    raw = json.loads((first.path / "manifest.json").read_text())
    for i in range(40):
        for j in range(1, 26):
            d = store.root / f"a{i}" / f"v{j}"
            if d.exists():
                continue
            d.mkdir(parents=True)
            (d / "manifest.json").write_text(
                json.dumps({**raw, "name": f"a{i}", "version": f"v{j}"})
            )
    snap = store.scan()
    assert snap.version_count() == 1000 and not snap.broken
    assert snap.adapters["a3"].latest().version == "v25"  # type: ignore[union-attr]


def test_channels_update_is_audited_and_validated(store: AdapterStore, tmp_path: Path) -> None:
    add_version(store, tmp_path, "s", "v1")
    add_version(store, tmp_path, "s", "v2")
    store.update_channels(
        "s", lambda c: c.model_copy(update={"stable": "v1"}), actor="a", action="promote"
    )
    new = store.update_channels(
        "s",
        lambda c: Channels(stable="v2", previous=c.stable, revision=c.revision),
        actor="admin",
        action="promote",
        forced=True,
    )
    assert (new.stable, new.previous, new.revision) == ("v2", "v1", 2)
    last = store.audit()[-1]
    assert (last.action, last.from_version, last.to_version, last.forced) == (
        "promote",
        "v1",
        "v2",
        True,
    )
    with pytest.raises(NotFound, match="v9"):
        store.update_channels("s", lambda c: Channels(stable="v9"), actor="a", action="promote")
    assert store.adapter("s").channels.stable == "v2"


def test_crash_between_temp_write_and_rename_keeps_old_channels(
    store: AdapterStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_version(store, tmp_path, "s", "v1")
    add_version(store, tmp_path, "s", "v2")
    store.update_channels("s", lambda c: Channels(stable="v1"), actor="a", action="promote")
    before = (store.root / "s" / "channels.json").read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power lost"):
        store.update_channels("s", lambda c: Channels(stable="v2"), actor="a", action="promote")
    monkeypatch.undo()

    assert (store.root / "s" / "channels.json").read_bytes() == before
    assert not [p for p in (store.root / "s").iterdir() if ".tmp-" in p.name]
    assert store.scan().adapters["s"].channels.stable == "v1"


def test_evals_are_added_beside_an_immutable_version(store: AdapterStore, tmp_path: Path) -> None:
    v = add_version(store, tmp_path, "s", "v1")
    report = EvalReport(dataset="sentiment-heldout", metric="exact_match", score=0.9, n=60)
    store.add_eval("s", "v1", report, actor="ci")
    assert store.version("s", "v1").evals()["sentiment-heldout"].score == 0.9
    store.validate("s", "v1")  # evals/ does not break the checksums
    assert (v.path / "evals" / "sentiment-heldout.json").exists()


def test_validate_is_cached_until_a_file_changes(store: AdapterStore, tmp_path: Path) -> None:
    v = add_version(store, tmp_path, "s", "v1")
    assert store.validate("s", "v1") is store.validate("s", "v1")
    data = bytearray((v.path / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 1
    (v.path / "adapter_model.safetensors").write_bytes(bytes(data))
    with pytest.raises(AdapterInvalid, match="checksum"):
        store.validate("s", "v1")


def test_corrupt_channels_file_is_a_store_error(store: AdapterStore, tmp_path: Path) -> None:
    add_version(store, tmp_path, "s", "v1")
    (store.root / "s" / "channels.json").write_text("{not json")
    with pytest.raises(StoreError):
        store.update_channels("s", lambda c: c, actor="a", action="noop")


# --- concurrent writers ------------------------------------------------------------------


def _bump_canary(root: str, rounds: int) -> None:
    store = AdapterStore(Path(root), TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for _ in range(rounds):
        store.update_channels(
            "s",
            lambda c: c.model_copy(
                update={"canary": Canary(version="v2", weight=round((c.revision % 10) / 10, 1))}
            ),
            actor=f"pid{os.getpid()}",
            action="canary",
        )


def _assert_no_lost_update(store: AdapterStore, writes: int) -> None:
    channels = store.scan().adapters["s"].channels
    assert channels.revision == writes
    revisions = [e.model_extra["revision"] for e in store.audit() if e.action == "canary"]  # type: ignore[index]
    assert sorted(revisions) == list(range(1, writes + 1))


def test_concurrent_processes_never_lose_an_update(store: AdapterStore, tmp_path: Path) -> None:
    add_version(store, tmp_path, "s", "v1")
    add_version(store, tmp_path, "s", "v2")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump_canary, args=(str(store.root), 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    _assert_no_lost_update(store, 60)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=5))
def test_concurrent_threads_never_lose_an_update(
    tmp_path_factory: pytest.TempPathFactory, rounds: list[int]
) -> None:
    tmp = tmp_path_factory.mktemp("conc")
    store = AdapterStore(tmp / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    add_version(store, tmp, "s", "v1")
    add_version(store, tmp, "s", "v2")
    threads = [threading.Thread(target=_bump_canary, args=(str(store.root), n)) for n in rounds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_no_lost_update(store, sum(rounds))
    json.loads((store.root / "s" / "channels.json").read_text())


def _copy_version_by_hand(
    store: AdapterStore, tmp_path: Path, name: str, version: str, files: tuple[str, ...]
) -> tuple[Path, Path]:
    """Package `name@version` in a scratch store, copy only `files` of it under `store`.
    Returns (source dir, target dir)."""
    scratch = AdapterStore(tmp_path / "scratch", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    source = add_version(scratch, tmp_path, name, version, seed=5).path
    target = store.root / name / version
    target.mkdir(parents=True)
    for rel in files:
        (target / rel).write_bytes((source / rel).read_bytes())
    return source, target


def test_a_half_copied_version_is_watched_until_complete(
    store: AdapterStore, tmp_path: Path
) -> None:
    add_version(store, tmp_path, "s", "v1")
    source, target = _copy_version_by_hand(store, tmp_path, "s", "v2", ("adapter_config.json",))
    (target / "adapter_model.safetensors").write_bytes(b"\0" * 10)  # still copying
    assert "s/v2" in [b.path for b in store.scan().broken]  # no manifest.json yet
    mark = store.fingerprint()

    (target / "manifest.json").write_bytes((source / "manifest.json").read_bytes())

    assert store.fingerprint() != mark  # a file landing inside the version is noticed
    assert "v2" in store.scan().adapters["s"].versions
    with pytest.raises(AdapterInvalid, match=r"adapter_model.safetensors: \[checksum\]"):
        store.validate("s", "v2")
    state = store.validation_state("s", "v2")
    assert isinstance(state, AdapterInvalid) and state.rule == "checksum"

    (target / "adapter_model.safetensors").write_bytes(
        (source / "adapter_model.safetensors").read_bytes()
    )
    assert store.validate("s", "v2").rank == 4  # the cache follows the files


def test_register_in_place_validates_where_it_is(store: AdapterStore, tmp_path: Path) -> None:
    files = ("adapter_config.json", "adapter_model.safetensors", "manifest.json")
    _, target = _copy_version_by_hand(store, tmp_path, "s", "v1", files)
    (target / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    with pytest.raises(AdapterInvalid, match=r"adapter_config.json: \[checksum\]"):
        store.register_in_place("s", "v1", actor="admin:x")
    assert target.is_dir() and store.audit() == []  # refused: left as it is, not audited

    _, fixed = _copy_version_by_hand(store, tmp_path / "again", "s", "v2", files)
    found = store.register_in_place("s", "v2", actor="admin:x")
    assert found.path == fixed
    assert [(e.actor, e.action, e.to_version) for e in store.audit()] == [
        ("admin:x", "register", "v2")
    ]
    with pytest.raises(NotFound):
        store.register_in_place("s", "v9", actor="admin:x")


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(
    store: AdapterStore, tmp_path: Path
) -> None:
    add_version(store, tmp_path, "s", "v1")
    left = [store.root / "s" / f".channels.json.tmp-{i}" for i in ("abc", "def")]
    for path in left:
        path.write_text('{"stable": "v1"')  # kill -9 between the write and the rename
    other = store.root / "s" / ".editor-swap-file"
    other.write_text("not ours")
    store.update_channels("s", lambda c: Channels(stable="v1"), actor="a", action="promote")
    assert not any(p.exists() for p in left) and other.exists()
