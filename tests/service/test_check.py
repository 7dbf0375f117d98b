"""`dynofa check`: what `dynofa serve` would refuse is refused, every problem at once; the default passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from tests.fakes.boards import build_board


def _config(tmp_path: Path, **sections: Any) -> Path:
    base: dict[str, Any] = {
        "paths": {"runtime_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")},
    }
    for key, value in sections.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = main(["check", "--config", str(path), "--json"])
    return rc, json.loads(capsys.readouterr().out)


def test_default_config_passes_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["check", "--config", str(_config(tmp_path))])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ok, `dynofa serve` would start" in out
    for label in ("platform", "policy", "model demo", "endpoints", "state directory"):
        assert label in out
    assert len(out.splitlines()) < 40  # one screen
    assert not (tmp_path / "run" / "dynofa.lock").exists()  # the check leaves no lock behind


def test_every_problem_is_reported_not_only_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    board = build_board("odroid-xu3", str(tmp_path / "xu3"))
    path = _config(
        tmp_path,
        policy={"name": "model-based", "options": {"bogus_opt": 1}},
        models={
            "missing": {"catalog": str(tmp_path / "nowhere.json")},
            "corrupt": {"catalog": str(corrupt)},
            "wrong_pe": {"pes": ["cpu-medium"]},
        },
        paths={"sysfs_root": board.root},
    )
    rc, report = _check(path, capsys)
    assert rc == 1 and report["ok"] is False
    problems = {p["part"]: p["message"] for p in report["problems"]}
    assert set(problems) == {"policy", "model missing", "model corrupt", "model wrong_pe"}
    assert "unknown option bogus_opt for policy 'model-based'; it takes: min_margin" in problems["policy"]
    assert "__init__" not in problems["policy"]
    assert "nowhere.json does not exist" in problems["model missing"]
    assert "corrupt.json" in problems["model corrupt"]
    assert "cpu-medium" in problems["model wrong_pe"] and "cpu-big" in problems["model wrong_pe"]


@pytest.mark.parametrize(
    ("sections", "part", "needle"),
    [
        ({"policy": {"name": "nope"}}, "policy", "unknown policy 'nope'"),
        ({"policy": {"options": {"min_margin": "wide"}}}, "policy", "min_margin must be float"),
        ({"colour": "red"}, "config", "unknown field colour"),
        ({"paths": {"sysfs_root": "/nonexistent"}}, "platform", "/nonexistent is not a directory"),
        ({"telemetry": {"trace": "/nonexistent/dir/trace.jsonl"}}, "telemetry", "cannot write"),
        ({"models": {"d": {"weights": "/nonexistent/w.pth"}}}, "model d", "/nonexistent/w.pth"),
        ({"metrics": {"listen": "192.0.2.1:9464"}}, "metrics", "cannot listen on 192.0.2.1:9464"),
        ({"metrics": {"listen": "localhost"}}, "config", "metrics.listen must be HOST:PORT"),
    ],
)
def test_each_broken_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sections: dict[str, Any], part: str, needle: str
) -> None:
    rc, report = _check(_config(tmp_path, **sections), capsys)
    assert rc == 1
    assert [p["part"] for p in report["problems"]] == [part], report["problems"]
    assert needle in report["problems"][0]["message"]


def test_state_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    rc, report = _check(_config(tmp_path, paths={"state_dir": str(tmp_path / "afile")}), capsys)
    assert rc == 1
    assert any("paths.state_dir" in p["message"] and "not a directory" in p["message"] for p in report["problems"])


def test_a_pending_rollback_is_reported_not_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from governors.state import SavedState, StateStore

    board = build_board("odroid-xu3", str(tmp_path / "xu3"))
    store = StateStore(str(tmp_path / "state"))
    store.save(SavedState(root=board.root, board="odroid-xu3", pid=4242, boot_id=None))
    rc, report = _check(_config(tmp_path, paths={"sysfs_root": board.root}), capsys)
    assert rc == 0, report
    assert any("pid 4242" in n["message"] for n in report["notes"])
    assert store.load() is not None  # still there: the check changes nothing
