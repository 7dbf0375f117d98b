"""Runtime files and start-up errors: each refused clearly (naming the file and the fix), never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dynofa.catalog import load_catalog
from dynofa.config import load_config
from dynofa.errors import CatalogError, ConfigError, DynofaError
from dynofa.paths import UnsafePathError, ensure_private_dir
from service.control import TraceWriter
from tests.service.harness import REPO, start_daemon, write_config


def serve(config: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`dynofa serve` expected to refuse to start (the caller asserts on its exit status and stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", "serve", "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def _paths(config: Path) -> tuple[Path, Path]:
    paths = yaml.safe_load(config.read_text())["paths"]
    return Path(paths["runtime_dir"]), Path(paths["state_dir"])


# --- directories and files ---------------------------------------------------------------------


def test_world_writable_runtime_dir_is_refused(tmp_path: Path, tiny_catalog: Path) -> None:
    config = write_config(tmp_path, tiny_catalog)
    runtime, _ = _paths(config)
    try:
        os.chmod(runtime, 0o777)
        result = serve(config)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 1, result.stderr
    assert f"paths.runtime_dir {runtime} is writable by others (mode 0777)" in result.stderr
    assert "chmod go-w" in result.stderr and "Traceback" not in result.stderr


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path, tiny_catalog: Path) -> None:
    config = write_config(tmp_path, tiny_catalog)
    runtime, state = _paths(config)
    state.write_text("not a directory")
    try:
        result = serve(config)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 1
    assert f"paths.state_dir {state} is a file, not a directory" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_runtime_dir_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir(mode=0o750)
    os.chown(other, 65534, -1)
    with pytest.raises(UnsafePathError, match="belongs to uid 65534"):
        ensure_private_dir(other, "paths.runtime_dir")


def test_fresh_dirs_get_0750_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = ensure_private_dir(tmp_path / "a" / "b", "paths.state_dir")
    finally:
        os.umask(old)
    assert made.stat().st_mode & 0o777 == 0o750


def test_symlinked_lock_file_is_not_followed(tmp_path: Path, tiny_catalog: Path) -> None:
    config = write_config(tmp_path, tiny_catalog)
    runtime, _ = _paths(config)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (runtime / "dynofa.lock").symlink_to(victim)
    try:
        result = serve(config)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    assert result.returncode == 1
    assert "lock file" in result.stderr and "symbolic link" in result.stderr
    assert victim.read_text() == "precious\n"


def test_trace_file_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / "trace.jsonl").symlink_to(victim)
    trace = TraceWriter(tmp_path / "trace.jsonl", 1 << 20)
    trace.write({"t": 1})
    trace.close()
    assert victim.read_text() == "precious\n"
    assert trace.path is None  # disabled, with a warning


def test_a_restart_cleans_and_recovers_the_state_dir(tmp_path: Path, tiny_catalog: Path) -> None:
    """Nested-JSON budgets are moved aside, stale temp files removed, every file gets its explicit mode."""
    config = write_config(tmp_path, tiny_catalog)
    _, state = _paths(config)
    state.mkdir(mode=0o750)
    (state / "budgets.json").write_text("[" * 100_000 + "]" * 100_000)
    stale = [state / ".budgets.json.k2j3h4", state / ".dvfs-state.json.zz81aa"]
    for path in stale:
        path.write_text("{half a fil")
    old = os.umask(0)  # the daemon inherits it: modes must not depend on it
    try:
        daemon = start_daemon(config)
    finally:
        os.umask(old)
    try:
        assert not any(p.exists() for p in stale)
        assert (state / "budgets.json.corrupt").exists()
        c = daemon.client()
        c.set_budget("mode-app", latency_ms=20)
        assert "moved to" in daemon.log() and "Traceback" not in daemon.log()
        modes = {name: (state / name).stat().st_mode & 0o777 for name in ("budgets.json", "trace.jsonl")}
        modes["dynofa.lock"] = (daemon.runtime / "dynofa.lock").stat().st_mode & 0o777
        assert modes == {"budgets.json": 0o640, "trace.jsonl": 0o640, "dynofa.lock": 0o640}
        assert (daemon.runtime / "control.sock").stat().st_mode & 0o777 == 0o660
        assert json.loads((state / "budgets.json").read_text())["apps"]["mode-app"]["budget"]["latency_ms"] == 20
    finally:
        daemon.stop()


# --- configuration and catalog --------------------------------------------------------------------


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"limits:\n  max_apps: 4\n# caf\xe9\n", "is not UTF-8 text (byte"),
        ("limits:\n  max_apps: 4\n  max_apps: 8\n", "found the key 'max_apps' twice"),
        ("endpoints:\n  socket_mode: '0777'\n", "field endpoints.socket_mode must be a mode without access for others"),
        ("endpoints:\n  socket_mode: 0666\n", "field endpoints.socket_mode must be a mode without access for others"),
        ("endpoints:\n  control: ipc:///tmp/x.sock\n  telemetry: ipc:///tmp/x.sock\n",
         "endpoints.control and endpoints.telemetry are both ipc:///tmp/x.sock"),  # fmt: skip
        ("a:" + " [" * 2000, "config.yaml"),
    ],
)
def test_config_problems_name_the_file_and_the_fix(tmp_path: Path, text: str | bytes, message: str) -> None:
    path = _write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_bad_config_ends_serve_with_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path / "config.yaml", b"\xff\xfe\x00bad")
    result = serve(path, timeout=60)
    assert result.returncode == 1
    assert "is not UTF-8 text" in result.stderr and "Traceback" not in result.stderr


def test_non_utf8_catalog_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="is not UTF-8 text"):
        load_catalog(_write(tmp_path / "catalog.json", b'{"schema": "\xff"}'))
    with pytest.raises(CatalogError, match="is not a catalog"):
        load_catalog(_write(tmp_path / "deep.json", "[" * 100_000 + "]" * 100_000))


def test_cuda_device_without_cuda_is_a_config_error(tiny_catalog: Path) -> None:
    import torch

    from dynofa.config import ModelConfig
    from service.models import ModelRuntime

    if torch.cuda.is_available():
        pytest.skip("this torch can use CUDA")
    with pytest.raises(DynofaError, match=r"models\.tiny\.device is 'cuda', but this torch cannot use CUDA"):
        ModelRuntime.load("tiny", ModelConfig(catalog=str(tiny_catalog), device="cuda"), ["cpu"])
