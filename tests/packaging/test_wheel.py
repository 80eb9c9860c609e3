"""The built wheel works on its own, outside the checkout.

The wheel is built (``pip wheel --no-deps``) from a copy of exactly what the Dockerfile's
builder copies (pyproject.toml, README.md, processor/), so the build writes nothing into
the checkout. One test installs it into a fresh venv in a temporary directory the way the
image does (dependencies from requirements.lock with ``--require-hashes``, then the wheel
with ``--no-deps``, then ``pip check``) and runs it from another temporary directory with
no PYTHONPATH and no HL7_* variables: the console command answers, and the Avro schemas
load from the installed package and encode and decode an accepted record.

Needs PyPI (build isolation fetches setuptools; the venv fetches the dependencies).
"""

from __future__ import annotations

import ast
import email
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SCHEMA_FILES = ("accepted_message.avsc", "dead_letter.avsc")
DATA_FILES = ("processor/demo_registry.yaml", "processor/kafka/kafka-runtime.lock") + tuple(
    f"processor/schemas/{name}" for name in SCHEMA_FILES
)
TEST_ONLY = ("hl7apy", "httpx", "defusedxml")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("wheel-build")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "processor", src / "processor", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(src)], cwd=tmp)
    (built,) = dist.glob("hl7_partner_gateway-*.whl")
    yield built


# ---------------------------------------------------------------- without installing


def test_top_level_schemas_are_the_packaged_files() -> None:
    """Readers find the schemas in schemas/ (the SPEC's place); the package reads
    processor/schemas/. One directory (schemas/ is a symlink) or, where a checkout has no
    symlinks, the same bytes."""
    top, packaged = ROOT / "schemas", ROOT / "processor" / "schemas"
    assert sorted(p.name for p in top.glob("*.avsc")) == sorted(p.name for p in packaged.glob("*.avsc"))
    assert sorted(p.name for p in packaged.glob("*.avsc")) == sorted(SCHEMA_FILES)
    for name in SCHEMA_FILES:
        assert (top / name).read_bytes() == (packaged / name).read_bytes(), name


def test_default_schema_directory_is_the_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from processor.avro.schemas import SCHEMAS_DIR_ENV, schemas_dir

    monkeypatch.delenv(SCHEMAS_DIR_ENV, raising=False)
    import processor

    assert Path(str(schemas_dir())) == Path(processor.__file__).parent / "schemas"


def test_wheel_carries_schemas_and_data_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in DATA_FILES:
            assert name in names, f"{name} missing from {wheel.name}"
        for name in SCHEMA_FILES:
            assert zf.read(f"processor/schemas/{name}") == (ROOT / "schemas" / name).read_bytes(), name
        tops = {name.split("/", 1)[0] for name in names}
        dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
        assert tops == {"processor", dist_info}, f"only the package goes into the wheel: {sorted(tops)}"
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zf.read(metadata_name))
    runtime = [r for r in metadata.get_all("Requires-Dist") or [] if "extra ==" not in r]
    runtime_names = {_norm(re.split(r"[\s\[<>=!~;(]", r, maxsplit=1)[0]) for r in runtime}
    for name in TEST_ONLY:
        assert name not in runtime_names, f"{name} is test-only: it belongs in the test extra"


def test_every_runtime_dependency_is_imported_by_the_package() -> None:
    """No dead runtime dependency, and nothing processor/ imports left undeclared."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    imported: set[str] = set()
    for path in (ROOT / "processor").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    imported -= set(sys.stdlib_module_names) | {"processor", "__future__"}
    by_module = packages_distributions()
    unknown = {module for module in imported if module not in by_module}
    assert not unknown, f"processor/ imports modules no installed distribution provides: {sorted(unknown)}"
    used = {_norm(dist) for module in imported for dist in by_module[module]}
    declared = {_norm(Requirement(spec).name) for spec in PYPROJECT["project"]["dependencies"]}
    assert not declared - used, f"runtime dependencies processor/ never imports: {sorted(declared - used)}"
    assert not used - declared, f"imported by processor/ but not declared: {sorted(used - declared)}"


# ---------------------------------------------------------------- installed in a fresh venv

SMOKE = r"""
import json, sys, uuid
from importlib.resources import files
from pathlib import Path

import processor
from processor.avro.codec import AvroCodec
from processor.raw import RawRecord
from processor.avro.schemas import schemas_dir
from processor.config import load_settings
from processor.registry.loader import load_registry
from processor.stream.routing import Topics, route

venv = Path(sys.prefix).resolve()
assert Path(processor.__file__).resolve().is_relative_to(venv), processor.__file__
assert Path(str(schemas_dir())).resolve().is_relative_to(venv), schemas_dir()
assert (files("processor") / "kafka" / "kafka-runtime.lock").read_text(encoding="utf-8").strip()

settings = load_settings()
codec = AvroCodec.from_settings(settings)  # loads both schemas
assert codec.wire_format == "single-object", codec.wire_format
topics = Topics(accepted=settings.topic_accepted, deadletter=settings.topic_deadletter)
registry = load_registry(Path(str(files("processor") / "demo_registry.yaml")))
message = (b"MSH|^~\\&|PAS|trustalias{trustalias}|PKB|PKB|20240115103000||ADT^A01^ADT_A01|CTRL0001|P|2.4\r"
           b"PID|1||ZZT0000001^^^TRUST^MR||ZZTESTPATIENT^ZZTESTFIRST\r")
ingest_id = str(uuid.uuid4())
raw = RawRecord(topic="hl7.raw", partition=0, offset=7, key=None, value=message, headers={
    "hl7.ingest_id": ingest_id, "hl7.principal_id": "mailco", "hl7.principal_type": "partner",
    "hl7.received_at": "1767225599000000", "hl7.source_ip": "203.0.113.7", "hl7.transport": "http"})
routed = route(raw, registry, now_us=1767225600000000, topics=topics, encode=codec.encode)
assert routed.topic == topics.accepted, (routed.topic, routed.reason, routed.detail)
record = codec.decode(routed.value)
assert record["ingest_id"] == ingest_id and record["payload"] == message, record
print(json.dumps({"schemas": str(schemas_dir()), "demo_registry": str(files("processor") / "demo_registry.yaml"),
                  "accepted": record["message_control_id"]}))
"""


def _lock_fits_this_interpreter() -> bool:
    """requirements.lock is resolved for the image: CPython 3.11 on Linux x86_64."""
    return (sys.implementation.name == "cpython" and sys.version_info[:2] == (3, 11)
            and sys.platform == "linux" and platform.machine() == "x86_64")


def _clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HL7_", "PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_installed_wheel_runs_outside_the_checkout(
    wheel: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    env = _clean_env(venv)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    if _lock_fits_this_interpreter():  # what deploy/Dockerfile does
        _run([*pip, "--require-hashes", "--only-binary=:all:", "-r", str(ROOT / "requirements.lock")], cwd=work, env=env)
        _run([*pip, "--no-index", "--no-deps", str(wheel)], cwd=work, env=env)
        _run([python, "-m", "pip", "check"], cwd=work, env=env)
    else:
        _run([*pip, str(wheel)], cwd=work, env=env)
    installed = time.monotonic()

    assert not (work / "processor").exists() and "PYTHONPATH" not in env
    assert _run([str(venv / "bin" / "hl7-processor"), "--version"], cwd=work, env=env).strip()
    smoke = json.loads(_run([python, "-c", SMOKE], cwd=work, env=env).strip().splitlines()[-1])
    assert Path(smoke["schemas"]).resolve().is_relative_to(venv.resolve())

    (work / "msg.hl7").write_bytes(
        b"MSH|^~\\&|PAS|trustalias{trustalias}|PKB|PKB|20240115103000||ADT^A01^ADT_A01|CTRL0002|P|2.4\r"
    )
    explained = json.loads(_run([str(venv / "bin" / "hl7-processor"), "explain", "--registry", smoke["demo_registry"],
                                 "--principal", "mailco", "msg.hl7"], cwd=work, env=env))
    assert explained["decision"] == "accept", explained
    with capsys.disabled():
        print(f"\n[wheel] venv + install {installed - started:.1f}s, checks {time.monotonic() - installed:.1f}s",
              file=sys.stderr)
