"""deploy/Dockerfile and .dockerignore, read as text (no Docker engine to build with here)."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        current += " " + stripped.rstrip("\\").strip() if current else stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            logical.append(current)
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


INSTRUCTIONS = _instructions()


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in INSTRUCTIONS:
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _copy_sources() -> list[str]:
    """Build-context paths the Dockerfile reads: COPY sources and ``RUN --mount=type=bind`` sources."""
    sources = []
    for name, args in INSTRUCTIONS:
        if name == "COPY":
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            if "--from=" not in args:
                sources.extend(parts[:-1])
        if name == "RUN":
            for mount in re.findall(r"--mount=(\S+)", args):
                options = dict(o.split("=", 1) for o in mount.split(",") if "=" in o)
                if options.get("type") == "bind" and "from" not in options:
                    sources.append(options.get("source", "."))
    return sources


def test_multi_stage_build_with_a_named_builder() -> None:
    froms = [args for name, args in INSTRUCTIONS if name == "FROM"]
    assert len(froms) >= 2
    stage_names = {args.split()[-1] for args in froms if " AS " in args.upper()}
    assert "builder" in stage_names
    runtime = _stages()[-1]
    assert any("from=builder" in args for _name, args in runtime), "runtime installs the builder's wheels"
    assert not any(name == "RUN" and "pip wheel" in args for name, args in runtime), "no builds in the runtime stage"


def test_runtime_runs_as_a_fixed_non_root_uid() -> None:
    users = [args for name, args in _stages()[-1] if name == "USER"]
    assert users, "runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 1000, "numeric UID so runAsNonRoot can verify it"
    assert '--uid "${APP_UID}"' in DOCKERFILE and f"ARG APP_UID={uid}" in DOCKERFILE


def test_uid_matches_compose_and_kubernetes(services: dict[str, Any], k8s_objects: list[dict[str, Any]]) -> None:
    uid = [args for name, args in _stages()[-1] if name == "USER"][-1].split(":")[0]
    for svc in services.values():
        if "build" in svc:
            assert str(svc["user"]).split(":")[0] == uid
    for obj in k8s_objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        if pod:
            assert str(pod["securityContext"]["runAsUser"]) == uid


def test_entrypoint_is_the_console_command_and_exists() -> None:
    (entrypoint,) = [args for name, args in INSTRUCTIONS if name == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["hl7-processor"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "hl7-processor" in pyproject["project"]["scripts"]


def test_healthcheck_uses_the_probe_the_image_installs() -> None:
    (healthcheck,) = [args for name, args in INSTRUCTIONS if name == "HEALTHCHECK"]
    command = json.loads(healthcheck.split("CMD", 1)[1])
    assert command[0] == "hl7-healthcheck" and command[1] == "/livez"
    assert re.search(r"COPY\s+.*deploy/healthcheck\.py\s+/usr/local/bin/hl7-healthcheck", DOCKERFILE)


def test_schemas_ship_inside_the_package_not_beside_it() -> None:
    """The wheel carries processor/schemas/*.avsc (read by importlib.resources): no
    HL7_SCHEMAS_DIR and no separate copy of schemas/ in the image."""
    env = " ".join(args for name, args in INSTRUCTIONS if name == "ENV")
    assert "HL7_SCHEMAS_DIR" not in env
    assert not any(source.rstrip("/").endswith("schemas") for source in _copy_sources())
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "schemas/*.avsc" in pyproject["tool"]["setuptools"]["package-data"]["processor"]
    names = ["accepted_message.avsc", "dead_letter.avsc"]
    assert sorted(p.name for p in (ROOT / "processor" / "schemas").glob("*.avsc")) == names
    assert sorted(p.name for p in (ROOT / "schemas").glob("*.avsc")) == names


# ---------------------------------------------------------------- dependency layer and lock


def _runtime_index(predicate: Any) -> int:
    matches = [i for i, (name, args) in enumerate(_stages()[-1]) if predicate(name, args)]
    assert matches
    return matches[0]


def test_dependencies_install_from_the_hashed_lock_before_the_code() -> None:
    """A layer that depends on requirements.lock alone, so a code edit re-downloads nothing."""
    runtime = _stages()[-1]
    deps = _runtime_index(lambda name, args: name == "RUN" and "--require-hashes" in args)
    deps_args = runtime[deps][1]
    assert "requirements.lock" in deps_args and "--only-binary=:all:" in deps_args
    assert "from=builder" not in deps_args
    app = _runtime_index(lambda name, args: name == "RUN" and "from=builder" in args)
    assert deps < app, "dependencies must be installed before the app's wheel"
    # Nothing from the code reaches the runtime stage before the dependency layer.
    for name, args in runtime[:deps]:
        if name in {"COPY", "ADD"}:
            assert "requirements.lock" in args and "processor" not in args, args
    app_args = runtime[app][1]
    assert "--no-deps" in app_args and "--no-index" in app_args and "pip check" in app_args
    assert "load_schema" in app_args, "the build proves the installed wheel finds its schemas"
    # The builder only builds the app's own wheel: dependencies come from the lock alone.
    builder = _stages()[0]
    wheels = [args for name, args in builder if name == "RUN" and "pip wheel" in args]
    assert wheels and all("--no-deps" in args for args in wheels)


def _lock() -> dict[str, tuple[str, list[str]]]:
    """requirements.lock as {normalized name: (version, hashes)}."""
    text = (ROOT / "requirements.lock").read_text(encoding="utf-8").replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)", line)
        assert match, f"requirements.lock: not an exact pin with hashes: {line[:80]}"
        name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
        pins[name] = (match.group(2), re.findall(r"sha256:([0-9a-f]{64})", match.group(3)))
    return pins


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    from packaging.requirements import Requirement

    pins = _lock()
    assert all(hashes for _version, hashes in pins.values()), "every pin needs --hash"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for spec in pyproject["project"]["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name][0]}, outside {req.specifier}: run `make lock`"
        )


def test_lock_is_regenerated_by_a_make_target() -> None:
    lock = (ROOT / "requirements.lock").read_text(encoding="utf-8")
    assert "make lock" in lock[:300], "the header names the command that regenerates it"
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^lock:", makefile, re.M) and "--generate-hashes" in makefile


def test_env_settings_are_ones_the_app_reads(known_setting: Any) -> None:
    env = " ".join(args for name, args in INSTRUCTIONS if name == "ENV")
    names = re.findall(r"\b(HL7_[A-Z0-9_]+)=", env)
    assert names and all(known_setting(name) for name in names)


def test_no_secrets_baked_into_the_image() -> None:
    for name, args in INSTRUCTIONS:
        if name in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|SASL", args, re.I), args
    assert "registry" not in " ".join(_copy_sources())


# ---------------------------------------------------------------- .dockerignore


def _ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a directory match covers its contents."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.strip("/")
        globs = {glob}
        if glob.startswith("**/"):
            globs.add(glob[3:])
        for candidate in candidates:
            if any(fnmatch.fnmatchcase(candidate, g) or fnmatch.fnmatchcase(candidate, g.replace("**/", "*/")) for g in globs):
                excluded = not negate
                break
    return excluded


def test_every_copied_path_exists_and_reaches_the_build_context() -> None:
    patterns = _ignore_patterns()
    for source in _copy_sources():
        assert (ROOT / source).exists(), f"COPY {source}: missing (the wheel build needs it)"
        assert not _excluded(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for module in ("processor/cli.py", "processor/kafka/kafka-runtime.lock", "processor/schemas/dead_letter.avsc",
                   "processor/demo_registry.yaml", "requirements.lock"):
        assert not _excluded(module, patterns), module


def test_pyproject_readme_is_copied_into_the_builder() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    readme = pyproject["project"].get("readme")
    if isinstance(readme, Mapping):
        readme = readme.get("file")
    if readme:
        assert readme in _copy_sources()


def test_secrets_and_clutter_never_reach_the_build_context() -> None:
    patterns = _ignore_patterns()
    for path in (".git/config", ".env", "processor/.env", "tests/unit/test_decision.py", "deploy/registry/registry.yaml",
                 "registry.yaml", "processor/__pycache__/cli.cpython-311.pyc", ".venv/bin/python", "docker-compose.yml"):
        assert _excluded(path, patterns), path
