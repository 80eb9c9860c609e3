"""Hot reload: atomic swap, refusal of invalid or half-written files, metrics."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY as PROM

from processor.errors import RegistryInvalid
from processor.registry.loader import registry_version
from processor.registry.model import Registry
from processor.registry.watcher import RegistryWatcher

Doc = dict[str, Any]


def reloads(result: str) -> float:
    return PROM.get_sample_value("hl7_registry_reloads_total", {"result": result}) or 0.0


def info(version: str) -> float | None:
    return PROM.get_sample_value("hl7_registry_info", {"version": version})


def file_loaded() -> float | None:
    return PROM.get_sample_value("hl7_registry_file_loaded")


def last_success() -> float | None:
    return PROM.get_sample_value("hl7_registry_last_success_timestamp_seconds")


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@pytest.fixture
def variants(document: Doc, to_bytes: Callable[[Doc], bytes]) -> tuple[bytes, bytes, bytes]:
    """(v1, v2, invalid) registry bytes."""
    v1 = to_bytes(document)
    document["customers"].append({"id": "new-1", "alias": "newalias"})
    v2 = to_bytes(document)
    document["customers"][0]["alias"] = "bad alias"
    return v1, v2, to_bytes(document)


def test_initial_load_and_metrics(tmp_path: Path, variants: tuple[bytes, bytes, bytes]) -> None:
    v1, _, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    ok_before = reloads("ok")
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    assert watcher.current.version == registry_version(v1)
    assert reloads("ok") == ok_before + 1
    assert info(registry_version(v1)) == 1.0


def test_invalid_initial_file_raises(tmp_path: Path, variants: tuple[bytes, bytes, bytes]) -> None:
    path = tmp_path / "registry.yaml"
    path.write_bytes(variants[2])
    errors_before = reloads("error")
    with pytest.raises(RegistryInvalid, match=r"customers\[0\] \(id=trust-1\)\.alias"):
        RegistryWatcher(path)
    assert reloads("error") == errors_before + 1
    with pytest.raises(RegistryInvalid, match="unreadable"):
        RegistryWatcher(tmp_path / "missing.yaml")


def test_change_is_swapped_in_and_old_info_label_removed(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    seen: list[Registry] = []
    watcher.subscribe(seen.append)
    assert watcher.poll_now() is False  # unchanged
    ok_before = reloads("ok")
    write_atomically(path, v2)
    assert watcher.poll_now() is True
    assert watcher.current.version == registry_version(v2)
    assert watcher.current.customer_by_alias("newalias") is not None
    assert [r.version for r in seen] == [registry_version(v2)]
    assert reloads("ok") == ok_before + 1
    assert info(registry_version(v2)) == 1.0
    assert info(registry_version(v1)) is None


def test_invalid_file_refused_old_kept_counted_once_then_fix_loaded(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    v1, v2, invalid = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    errors_before = reloads("error")
    write_atomically(path, invalid)
    with caplog.at_level(logging.ERROR, logger="processor.registry.watcher"):
        assert watcher.poll_now() is False
    assert watcher.current.version == registry_version(v1)
    assert reloads("error") == errors_before + 1
    assert "customers[0] (id=trust-1).alias" in caplog.text
    assert "$argon2id$" not in caplog.text  # no hashes in logs
    assert info(registry_version(v1)) == 1.0
    # polling again (or rewriting the same bad bytes) does not re-count
    assert watcher.poll_now() is False
    write_atomically(path, invalid)
    assert watcher.poll_now() is False
    assert reloads("error") == errors_before + 1
    # the fixed file is loaded
    write_atomically(path, v2)
    assert watcher.poll_now() is True
    assert watcher.current.version == registry_version(v2)


def test_half_written_file_refused_then_completed_file_loaded(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    for cut in (0, len(v2) // 3, v2.index(b"partners:") + 3):
        with path.open("wb") as f:  # a non-atomic writer, caught mid-write
            f.write(v2[:cut])
        assert watcher.poll_now() is False
        assert watcher.current.version == registry_version(v1)
    with path.open("wb") as f:
        f.write(v2)
    assert watcher.poll_now() is True
    assert watcher.current.version == registry_version(v2)


def test_refused_version_is_retried_after_a_valid_one(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, v2, invalid = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    errors_before = reloads("error")
    write_atomically(path, invalid)
    watcher.poll_now()
    write_atomically(path, v2)
    assert watcher.poll_now() is True
    write_atomically(path, invalid)  # the same bad content again, after a good one: reported again
    assert watcher.poll_now() is False
    assert reloads("error") == errors_before + 2
    write_atomically(path, v1)
    assert watcher.poll_now() is True


def test_missing_file_keeps_old_registry_and_recovers(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    errors_before = reloads("error")
    path.unlink()
    assert watcher.poll_now() is False
    assert watcher.poll_now() is False
    assert reloads("error") == errors_before + 1  # once per outage, not per poll
    assert watcher.current.version == registry_version(v1)
    path.write_bytes(v2)
    assert watcher.poll_now() is True


def test_settle_waits_for_a_stable_file(tmp_path: Path, variants: tuple[bytes, bytes, bytes]) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=True)
    write_atomically(path, v2)
    assert watcher.poll_now() is False  # changed since the last poll: wait one more
    assert watcher.current.version == registry_version(v1)
    assert watcher.poll_now() is True
    assert watcher.current.version == registry_version(v2)


def test_subscriber_failure_does_not_stop_the_swap(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)

    def bad(_r: Registry) -> None:
        raise RuntimeError("subscriber bug")

    seen: list[str] = []
    watcher.subscribe(bad)
    watcher.subscribe(lambda r: seen.append(r.version))
    write_atomically(path, v2)
    assert watcher.poll_now() is True
    assert seen == [registry_version(v2)]


def test_background_thread_reloads(tmp_path: Path, variants: tuple[bytes, bytes, bytes]) -> None:
    v1, v2, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    swapped = threading.Event()
    with RegistryWatcher(path, interval_s=0.02) as watcher:
        watcher.subscribe(lambda _r: swapped.set())
        write_atomically(path, v2)
        assert swapped.wait(30), "watcher thread never reloaded"
        assert watcher.current.version == registry_version(v2)
    assert watcher._thread is None


def test_file_loaded_gauge_holds_while_the_refused_file_stays(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    """HL7RegistryReloadFailed alerts on hl7_registry_file_loaded == 0: it must stay 0 for as
    long as the refused file is on disk (not only at the poll that counted the error), and
    come back to 1 when a valid file is loaded or the version in force is put back."""
    v1, v2, invalid = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    before = time.time()
    watcher = RegistryWatcher(path, interval_s=60, settle=False, full_check_every=1)
    assert file_loaded() == 1.0
    loaded_at = last_success()
    assert loaded_at is not None and loaded_at >= before - 1
    write_atomically(path, invalid)
    assert watcher.poll_now() is False
    assert file_loaded() == 0.0
    for _ in range(3):  # later polls (full re-reads included) neither re-count nor clear it
        assert watcher.poll_now() is False
        assert file_loaded() == 0.0
    assert last_success() == loaded_at, "a refusal is not a success"
    # The version in force put back: nothing to load, the file on disk is in force again.
    write_atomically(path, v1)
    assert watcher.poll_now() is False
    assert file_loaded() == 1.0
    # The same refused bytes once more: 0 again, although not counted again.
    errors_before = reloads("error")
    write_atomically(path, invalid)
    assert watcher.poll_now() is False
    assert file_loaded() == 0.0 and reloads("error") == errors_before
    # A fixed file is loaded: 1, and the success time moves on.
    write_atomically(path, v2)
    assert watcher.poll_now() is True
    assert file_loaded() == 1.0
    assert (last_success() or 0) >= loaded_at


def test_file_loaded_gauge_is_zero_while_the_file_is_missing(
    tmp_path: Path, variants: tuple[bytes, bytes, bytes]
) -> None:
    v1, _, _ = variants
    path = tmp_path / "registry.yaml"
    path.write_bytes(v1)
    watcher = RegistryWatcher(path, interval_s=60, settle=False)
    path.unlink()
    assert watcher.poll_now() is False
    assert watcher.poll_now() is False
    assert file_loaded() == 0.0
    path.write_bytes(v1)  # the same content back: in force again without a swap
    assert watcher.poll_now() is False
    assert file_loaded() == 1.0
