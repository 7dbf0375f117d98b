"""Every subcommand with bad values, paths and endpoints: one line on stderr, a non-zero status, no traceback.

Values are checked before any work starts: none of these loads a model, trains or asks a daemon.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cli.main import main

NOWHERE = "/nonexistent-dynofa-dir"

BAD = [
    (["budget", "set", "a", "--latency-ms", "nan"], 2, "--latency-ms: must be a finite number > 0, got 'nan'"),
    (["budget", "set", "a", "--latency-ms", "inf"], 2, "got 'inf'"),
    (["budget", "set", "a", "--latency-ms", "-3"], 2, "got '-3'"),
    (["budget", "set", "a", "--latency-ms", "10", "--min-accuracy", "1.5"], 2, "--min-accuracy"),
    (["budget", "set", "a", "--latency-ms", "10", "--power-cap-w", "0"], 2, "--power-cap-w"),
    (["budget", "set", "a", "--latency-ms", "10", "--endpoint", "garbage"], 1, "endpoint 'garbage' is not"),
    (["budget", "clear", "a", "--endpoint", "tcp://host"], 1, "tcp://HOST:PORT"),
    (["budget", "list", "--timeout", "0"], 2, "--timeout"),
    (["status", "--endpoint", "garbage"], 1, "is not a daemon endpoint"),
    (["status", "--timeout", "-1"], 2, "--timeout: must be a finite number > 0"),
    (["top", "--interval", "0"], 2, "--interval"),
    (["top", "--interval", "-1"], 2, "--interval"),
    (["top", "--iterations", "0"], 2, "--iterations: must be an integer >= 1"),
    (["plot", "--last", "-5"], 2, "--last: must be a finite number > 0, got '-5'"),
    (["plot", "-o", f"{NOWHERE}/x.png"], 2, f"cannot write {NOWHERE}/x.png"),
    (["plot", "-o", "/"], 2, "is a directory"),
    (["demo", "--phase-seconds", "0"], 2, "--phase-seconds"),
    (["demo", "--fps", "nan"], 2, "--fps"),
    (["catalog", "build", "--family", "x", "--out", f"{NOWHERE}/c.json"], 2, f"cannot write {NOWHERE}/c.json"),
    (["catalog", "build", "--family", "x", "--out", "c.json", "--candidates", "0"], 2, "--candidates"),
    (["catalog", "show", f"{NOWHERE}/c.json"], 1, "does not exist"),
    (["train", "grouped", "--epochs-per-level", "0"], 2, "--epochs-per-level"),
    (["train", "grouped", "--lr", "-1"], 2, "--lr"),
    (["train", "grouped", "--out", f"{NOWHERE}/g.pt"], 2, f"cannot write {NOWHERE}/g.pt"),
    (["train", "demo", "--epochs", "-2"], 2, "--epochs"),
    (["train", "demo", "--out", f"{NOWHERE}/d.pt"], 2, "cannot write"),
    (["train", "catalogs", "--keep", "0"], 2, "--keep"),
    (["subnets", "--catalog", f"{NOWHERE}/c.json"], 1, "does not exist"),
    (["subnets", "--measure", "0"], 2, "--measure"),
    (["platform", "--sysfs-root", NOWHERE], 2, "is not a directory"),
    (["check", "--config", f"{NOWHERE}/config.yaml"], 1, "does not exist"),
    (["serve", "--config", f"{NOWHERE}/config.yaml"], 1, "does not exist"),
    (["nosuchcommand"], 2, "invalid choice"),
]


@pytest.mark.parametrize(("argv", "code", "needle"), BAD, ids=[" ".join(a) for a, _, _ in BAD])
def test_bad_input_gives_one_line_and_a_status(
    argv: list[str], code: int, needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = int(exc.code or 0)
    captured = capsys.readouterr()
    err = captured.err if argv[0] != "check" else captured.out  # check's report is its output
    assert rc == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == (1 if argv[0] != "check" else 2), err  # check: the verdict, then the problem
    assert needle in lines[-1] and "Traceback" not in err


def test_bad_endpoint_from_the_environment(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DYNOFA_ENDPOINT", "foo")
    assert main(["status"]) == 1
    assert capsys.readouterr().err.strip() == (
        "dynofa: error: $DYNOFA_ENDPOINT 'foo' is not a daemon endpoint; give ipc:///PATH/control.sock or tcp://HOST:PORT"
    )


def test_a_stale_socket_after_kill_9_reads_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # what a SIGKILLed daemon leaves: the file, nobody listening
    stale.close()
    assert main(["status", "--endpoint", f"ipc://{path}"]) == 1
    err = capsys.readouterr().err
    assert "not running" in err and "stale socket" in err and len(err.strip().splitlines()) == 1


def test_top_keys_quit_pause_and_switch_view() -> None:
    from cli.commands.top import Screen

    screen = Screen()
    screen.key("v")
    assert screen.view == "apps"
    screen.key("v")
    assert screen.view == "pes"
    screen.key("v")
    assert screen.view == "all"
    screen.key(" ")
    assert screen.paused
    screen.key("p")
    assert not screen.paused
    assert not screen.quit
    screen.key("q")
    assert screen.quit


def test_status_views_show_their_part_only() -> None:
    from cli.commands.status import render_status

    state = {"apps": {"cam": {"model": "m", "budget": {"latency_ms": 30, "power_cap_w": 5, "priority": 2}}},
             "pes": {"cpu": {"kind": "cpu", "freq_khz": 1_000_000}}, "models": {"m": {"catalog": "/c.json"}}}
    everything = render_status(state)
    assert "power <= 5 W, priority 2" in everything and "1000 MHz" in everything and "/c.json" in everything
    assert "cam" in render_status(state, "apps") and "1000 MHz" not in render_status(state, "apps")
    assert "1000 MHz" in render_status(state, "pes") and "priority 2" not in render_status(state, "pes")
    assert "wake-up" not in everything  # not configured: not shown
    for wakeup, shown in (({"limit_us": 20, "held": True, "status": "available"}, "<= 20 us: held"),
                          ({"limit_us": 0, "held": False, "status": "available"}, "<= 0 us: released (no apps)"),
                          ({"limit_us": 5, "held": False, "status": "read-only", "reason": "needs root"},
                           "<= 5 us: not applied: needs root")):  # fmt: skip
        assert shown in render_status({**state, "daemon": {"wakeup_latency": wakeup}})


def test_bash_completion_completes_commands_options_and_choices(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import shutil
    import subprocess

    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "dynofa.bash"
    script.write_text(capsys.readouterr().out)
    probe = f"""source {script}
c() {{ COMP_WORDS=("$@"); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMPREPLY=(); _dynofa; echo "${{COMPREPLY[*]}}"; }}
c dynofa bu
c dynofa budget ""
c dynofa budget set app --objective ""
c dynofa top --v
"""
    lines = subprocess.run([bash, "-c", probe], capture_output=True, text=True, timeout=30, check=True).stdout
    assert lines.splitlines() == ["budget", "set clear remove list -h --help", "accuracy energy", "--view"]
    assert main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef dynofa\nautoload -U +X bashcompinit && bashcompinit\n")
