"""`aime-tui doctor` on good and broken setups: one line per check, a fix for each failure."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from instances import EXECUTABLE

from aime_tui.reports import doctor


def by_subject(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    """Checks keyed by what they are about (the words before the first path)."""
    keyed = {}
    for check in checks:
        subject = check.what.split(" /")[0].split(":")[0]
        keyed[subject] = check
    return keyed


def run(tmp_path: Path, **env: str) -> dict[str, doctor.Check]:
    config = tmp_path / "config.toml"
    env = {"AIME_ROON_DISCOVERY": "off", **env}  # discovery is test_discovery's, on loopback
    return by_subject(doctor.run(config_path=config, data_dir=tmp_path / "data", demo=False, env=env))


def test_a_fresh_setup_passes_with_warnings_for_what_is_not_configured(tmp_path):
    checks = run(tmp_path)
    assert checks["config"].outcome == doctor.WARN and "aime-tui init" in checks["config"].fix
    assert checks["data directory"].outcome == doctor.OK and "will be created" in checks["data directory"].what
    assert checks["database"].outcome == doctor.OK and "not created yet" in checks["database"].what
    assert all(check.outcome != doctor.FAIL for check in checks.values())
    assert not (tmp_path / "data").exists(), "doctor creates nothing"


def test_an_old_python_fails_with_a_fix():
    assert doctor.check_python((3, 11, 4)).line() == "ok    python 3.11.4"
    old = doctor.check_python((3, 10, 12))
    assert old.line() == "FAIL  python 3.10.12 is too old — fix: use Python 3.11 or newer"


def test_an_unwritable_data_directory_fails_with_a_fix(tmp_path):
    if os.geteuid() == 0:
        locked = Path("/proc/self")  # root writes anywhere a file can be created, just not here
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
    check = doctor.check_directory("data directory", locked)
    assert check.outcome == doctor.FAIL
    assert check.what.startswith(f"data directory {locked} is not writable")
    assert check.fix

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    check = doctor.check_directory("data directory", blocker / "data")
    assert check.outcome == doctor.FAIL and "is not a directory" in check.what and check.fix


def test_a_corrupt_database_fails_and_is_left_where_it_is(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    garbage = b"this is not an SQLite database, just bytes " * 100
    (data / "aime.db").write_bytes(garbage)
    check = run(tmp_path)["database"]
    assert check.outcome == doctor.FAIL
    assert "not a database" in check.what
    assert "backups" in check.fix and "moves an unreadable database aside" in check.fix
    assert (data / "aime.db").read_bytes() == garbage
    assert sorted(p.name for p in data.iterdir()) == ["aime.db"]


def test_a_bad_config_fails_naming_the_file_and_the_other_checks_still_run(tmp_path):
    (tmp_path / "config.toml").write_text("[lastfm\napi_key = 'x'\n")
    checks = run(tmp_path)
    config = checks["config"]
    assert config.outcome == doctor.FAIL
    assert f"{tmp_path / 'config.toml'}: not valid TOML" in config.what
    assert "aime-tui init" in config.fix
    assert checks["data directory"].outcome == doctor.OK
    assert "database" in checks


def test_endpoints_are_checked_with_a_short_timeout_and_secrets_never_shown(tmp_path):
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        roon_port = listening.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead_port = closed.getsockname()[1]  # bound, never listening: refused
            checks = run(
                tmp_path,
                AIME_LASTFM_API_URL=f"http://127.0.0.1:{dead_port}/2.0/",
                AIME_LASTFM_API_KEY="0123456789abcdef-secret",
                AIME_LASTFM_USER="someone",
                AIME_ROON_HOST="127.0.0.1",
                AIME_ROON_PORT=str(roon_port),
            )
    assert checks["Last.fm 127.0.0.1"].outcome == doctor.FAIL
    assert "unreachable" in checks["Last.fm 127.0.0.1"].what and checks["Last.fm 127.0.0.1"].fix
    assert checks["Roon Core 127.0.0.1"].outcome == doctor.OK
    assert not any("secret" in check.line() for check in checks.values())


@pytest.mark.skipif(not EXECUTABLE.exists(), reason="aime-tui is not installed")
def test_the_command_prints_one_line_per_check_and_exits_non_zero_on_failure(tmp_path):
    env = {**os.environ, "AIME_CONFIG": str(tmp_path / "none.toml")}
    good = subprocess.run(
        [str(EXECUTABLE), "doctor", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=20, env=env,
    )
    assert good.returncode == 0, good.stdout
    assert good.stdout.splitlines()[-1] == "all checks passed"

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "aime.db").write_bytes(b"\0garbage" * 512)
    (tmp_path / "none.toml").write_text('[scheduler]\nmode = "TURBO"\n')
    bad = subprocess.run(
        [str(EXECUTABLE), "doctor", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=20, env=env,
    )
    assert bad.returncode == 1
    lines = bad.stdout.splitlines()
    failures = [line for line in lines if line.startswith("FAIL")]
    assert len(failures) == 2 and all(" — fix: " in line for line in failures)
    assert lines[-1] == "2 checks failed"
    assert "Traceback" not in bad.stdout + bad.stderr


def test_notify_urls_that_apprise_cannot_parse_fail_masked_and_good_ones_pass(tmp_path):
    (tmp_path / "config.toml").write_text(
        '[notify]\nurls = ["json://ana:hunter2secret@127.0.0.1:9/hook", "nosuchscheme://token-abcdef123456"]\n',
        encoding="utf-8",
    )
    checks = doctor.run(config_path=tmp_path / "config.toml", data_dir=tmp_path / "data", demo=False, env={"AIME_ROON_DISCOVERY": "off"})
    lines = [check.line() for check in checks if check.what.startswith("notify")]
    assert lines[0].startswith("ok    notify: json://ana:****@127.0.0.1:9/hook parse")
    assert lines[1].startswith("FAIL  notify URL nosuchscheme://********3456 is not one Apprise knows — fix: ")
    assert "hunter2secret" not in "\n".join(check.line() for check in checks)


def test_the_http_address_must_be_free_to_bind(tmp_path):
    config = tmp_path / "config.toml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config.write_text(f'[http]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
        checks = doctor.run(config_path=config, data_dir=tmp_path / "data", demo=False, env={"AIME_ROON_DISCOVERY": "off"})
        (busy,) = [check for check in checks if check.what.startswith("http")]
        assert busy.outcome == doctor.FAIL and "cannot be bound" in busy.what and "[http] listen" in busy.fix
    checks = doctor.run(config_path=config, data_dir=tmp_path / "data", demo=False, env={"AIME_ROON_DISCOVERY": "off"})
    (free,) = [check for check in checks if check.what.startswith("http")]
    assert free.line() == f"ok    http 127.0.0.1:{port} can be bound (/health, /ready, /metrics)"
