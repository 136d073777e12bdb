"""`aime-tui status` with no instance running: the saved desired states, as views."""

from __future__ import annotations

import json

from aime_tui.cli.main import main


def test_status_without_an_instance_shows_the_saved_states_as_the_instance_would(tmp_path, capsys):
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(tmp_path / "config.toml")]
    assert main(["stop", "tracker", *where]) == 0
    assert main(["mode", "massive", *where]) == 0
    capsys.readouterr()

    assert main(["status", "--json", *where]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["instance"] is None
    views = {view["name"]: view for view in answer["services"]}
    assert {name: (view["state"], view["wanted"], view["mode"]) for name, view in views.items()} == {
        "tracker": ("stopped", False, None),
        "roon_tracker": ("stopped", True, None),
        "scheduler": ("stopped", True, "MASSIVE"),
    }
    # The same fields a running instance sends for each view.
    assert set(views["tracker"]) == {
        "name", "state", "wanted", "mode", "reason", "retry_in", "restarts", "status", "uptime", "up",
    }

    assert main(["status", *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("no running instance on ")
    tracker = next(line for line in lines if line.startswith("tracker "))
    assert tracker.split() == ["tracker", "○", "stopped", "off", "–", "–", "0", "–", "0", "(+0)", "–"]
