"""Config: file, environment overrides, defaults, clear errors, masked secrets."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest

from aime_tui.config import (
    CONFIG_TEMPLATE,
    ConfigError,
    load_config,
    mask_secret,
    write_config_template,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(tmp_path):
    config = load_config(config_path=tmp_path / "missing.toml", data_dir=tmp_path, env={})
    assert config.lastfm.api_key == "" and config.lastfm.missing() == "lastfm.api_key"
    assert config.scheduler.mode == "MAINTENANCE"
    assert config.restore_timeout == 3.0
    assert config.first_launch_defaults() == {
        "tracker": (True, None),
        "roon_tracker": (True, None),
        "scheduler": (True, "MAINTENANCE"),
    }
    assert config.db_path == tmp_path / "aime.db"


def test_environment_beats_the_file(tmp_path):
    path = write(tmp_path / "c.toml", '[lastfm]\napi_key = "from-file"\nuser = "ana"\n'
                 '[scheduler]\nenabled = true\nmode = "MAINTENANCE"\n[restore]\ntimeout = 5\n')
    env = {
        "AIME_LASTFM_API_KEY": "from-env",
        "AIME_ENABLE_SCHEDULER": "0",
        "AIME_SCHEDULER_MODE": "massive",
        "AIME_RESTORE_TIMEOUT": "1.5",
        "AIME_ROON_HOST": "core.local",
        "AIME_ROON_PORT": "9100",
        "AIME_DATA_DIR": str(tmp_path / "data"),
    }
    config = load_config(config_path=path, env=env)
    assert config.lastfm.api_key == "from-env"
    assert config.lastfm.user == "ana"
    assert config.scheduler.enabled is False and config.scheduler.mode == "MASSIVE"
    assert config.restore_timeout == 1.5
    assert (config.roon.host, config.roon.port) == ("core.local", 9100)
    assert config.data_dir == tmp_path / "data"
    assert config.first_launch_defaults()["scheduler"] == (False, "MASSIVE")


def test_the_request_rate_and_backfill_spacing(tmp_path):
    defaults = load_config(config_path=tmp_path / "missing.toml", data_dir=tmp_path, env={})
    assert (defaults.lastfm.rate, defaults.scheduler.backfill_interval) == (1.0, None)
    path = write(tmp_path / "c.toml", "[lastfm]\nrate = 5\n[scheduler]\nbackfill_interval = 0.2\n")
    config = load_config(config_path=path, data_dir=tmp_path, env={})
    assert (config.lastfm.rate, config.scheduler.backfill_interval) == (5.0, 0.2)


def test_the_demo_gets_its_own_data_dir(tmp_path):
    config = load_config(config_path=tmp_path / "none.toml", env={}, demo=True)
    assert config.data_dir.name == "demo"


@pytest.mark.parametrize(
    "text, env, message",
    [
        ("[lastfm\n", {}, "not valid TOML"),
        ('[scheduler]\nmode = "TURBO"\n', {}, "[scheduler] mode: expected MAINTENANCE or MASSIVE"),
        ("[restore]\ntimeout = -1\n", {}, "[restore] timeout: expected a number from 0.1 to 300 s, got -1"),
        ("[roon]\nport = \"abc\"\n", {}, "[roon] port: expected a whole number from 1 to 65535"),
        ("lastfm = 3\n", {}, "[lastfm] must be a table"),
        ("", {"AIME_ENABLE_SCHEDULER": "perhaps"}, "AIME_ENABLE_SCHEDULER: expected true or false"),
        ("", {"AIME_RESTORE_TIMEOUT": "soon"}, "AIME_RESTORE_TIMEOUT: expected a number from 0.1 to 300 s"),
        ("[lastfm]\nrate = 6\n", {}, "[lastfm] rate: expected a number from 0.01 to 5 requests a second, got 6"),
        ("[lastfm]\nrate = 0\n", {}, "[lastfm] rate: expected a number from 0.01 to 5 requests a second"),
        ("[scheduler]\nbackfill_interval = 0.1\n", {},
         "[scheduler] backfill_interval: expected a number from 0.2 to 3600 s, got 0.1"),
    ],
)
def test_bad_values_name_where_they_came_from(tmp_path, text, env, message):
    path = write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(config_path=path, data_dir=tmp_path, env=env)
    assert message in str(caught.value)
    if not env:
        assert str(path) in str(caught.value)


def test_secrets_are_masked():
    assert mask_secret("") == "(not set)"
    assert mask_secret("short") == "*****"
    masked = mask_secret("0123456789abcdef0123456789abcdef")
    assert masked.endswith("cdef") and "0123456789" not in masked


def test_a_file_in_another_encoding_says_so(tmp_path):
    path = tmp_path / "c.toml"
    path.write_bytes('[lastfm]\nuser = "Zoé"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(config_path=path, data_dir=tmp_path, env={})
    assert str(caught.value) == f"{path}: not UTF-8 text (line 2); save it as UTF-8"


def test_the_api_key_stays_out_of_reprs_and_crash_tracebacks(tmp_path):
    """Textual prints a crash as a traceback with every frame's locals: a config among
    them must not show the key in full."""
    from rich.console import Console
    from rich.traceback import Traceback

    key = "0123456789abcdef0123456789abcdef"
    config = load_config(
        config_path=tmp_path / "none.toml", data_dir=tmp_path, env={"AIME_LASTFM_API_KEY": key}
    )
    assert config.lastfm.api_key == key
    assert key not in repr(config) and "cdef" in repr(config.lastfm)

    def crash(config):
        raise RuntimeError("boom")

    console = Console(record=True, width=200, file=open(os.devnull, "w"))
    try:
        crash(config)
    except RuntimeError as exc:
        # As the app renders it (show_locals=True), with room for the whole repr; from the
        # crashing frame on (this test's own frame holds the key on purpose).
        frames = exc.__traceback__.tb_next
        console.print(Traceback.from_exception(
            type(exc), exc, frames, show_locals=True, locals_max_string=500, width=200
        ))
    shown = console.export_text()
    assert "LastfmConfig(" in shown and "boom" in shown
    assert key not in shown and key[:12] not in shown


def test_init_writes_a_parseable_template_and_never_overwrites(tmp_path):
    path = tmp_path / "conf" / "config.toml"
    write_config_template(path)
    assert path.read_text() == CONFIG_TEMPLATE
    assert path.stat().st_mode & 0o777 == 0o600, "it will hold an API key"
    parsed = tomllib.loads(path.read_text())
    assert set(parsed) == {"lastfm", "roon", "scheduler", "restore", "notify", "http"}
    assert load_config(config_path=path, data_dir=tmp_path, env={}).scheduler.mode == "MAINTENANCE"
    with pytest.raises(ConfigError, match="already exists"):
        write_config_template(path)


@pytest.mark.parametrize(
    "section, key, value, allowed",
    [
        ("roon", "port", "inf", "a whole number from 1 to 65535"),
        ("roon", "port", "99999999999", "a whole number from 1 to 65535"),
        ("roon", "port", "0", "a whole number from 1 to 65535"),
        ("roon", "port", "9330.5", "a whole number from 1 to 65535"),
        ("roon", "port", "true", "a whole number from 1 to 65535"),
        ("roon", "port", "1" + "0" * 400, "a whole number from 1 to 65535"),
        ("lastfm", "interval", "nan", "a number from 1 to 86400 s"),
        ("lastfm", "interval", "-inf", "a number from 1 to 86400 s"),
        ("scheduler", "catchup_interval", "0", "a number from 1 to 604800 s"),
        ("scheduler", "backfill_interval", "1e9", "a number from 0.2 to 3600 s"),
        ("lastfm", "rate", "nan", "a number from 0.01 to 5 requests a second"),
        ("restore", "timeout", "inf", "a number from 0.1 to 300 s"),
        ("restore", "timeout", "nan", "a number from 0.1 to 300 s"),
        ("restore", "timeout", "1e9", "a number from 0.1 to 300 s"),
        ("restore", "timeout", '"soon"', "a number from 0.1 to 300 s"),
        ("notify", "after", "-1", "a number from 0 to 604800 s"),
        ("notify", "after", "inf", "a number from 0 to 604800 s"),
    ],
)
def test_every_number_is_checked_for_type_finiteness_and_range(tmp_path, section, key, value, allowed):
    path = write(tmp_path / "c.toml", f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config_path=path, data_dir=tmp_path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path} [{section}] {key}: expected {allowed}, got ")
    assert "\n" not in message


@pytest.mark.parametrize("value", ["inf", "nan", "1e9", "0.01"])
def test_the_restore_timeout_from_the_environment_is_bounded_too(tmp_path, value):
    with pytest.raises(ConfigError, match=r"^AIME_RESTORE_TIMEOUT: expected a number from 0.1 to 300 s"):
        load_config(config_path=tmp_path / "none.toml", data_dir=tmp_path, env={"AIME_RESTORE_TIMEOUT": value})


def test_the_edges_of_each_range_are_accepted(tmp_path):
    path = write(tmp_path / "c.toml", "[roon]\nport = 65535\n[restore]\ntimeout = 300\n[lastfm]\ninterval = 1\n")
    config = load_config(config_path=path, data_dir=tmp_path, env={})
    assert (config.roon.port, config.restore_timeout, config.lastfm.interval) == (65535, 300.0, 1.0)


def test_unknown_sections_and_keys_are_warned_about_with_the_nearest_known_one(tmp_path):
    path = write(tmp_path / "c.toml", '[lastfm]\napi_kee = "k"\nuser = "u"\n[bogus]\nx = 1\n[sheduler]\nmode = "MASSIVE"\n')
    config = load_config(config_path=path, data_dir=tmp_path, env={})
    assert config.lastfm.user == "u"  # a warning, not a refusal
    assert config.warnings == (
        f"{path} [lastfm]: unknown key 'api_kee' ignored (did you mean api_key?)",
        f"{path}: unknown section [bogus] ignored",
        f"{path}: unknown section [sheduler] ignored (did you mean scheduler?)",
    )


def test_a_file_with_only_known_keys_has_no_warnings(tmp_path):
    path = write(tmp_path / "c.toml", CONFIG_TEMPLATE)
    assert load_config(config_path=path, data_dir=tmp_path, env={}).warnings == ()


def test_notify_and_http_keys_and_their_overrides(tmp_path):
    path = write(tmp_path / "c.toml", '[notify]\nurls = ["ntfy://ntfy.example/topic-secret1234"]\nafter = 120\n'
                 '[http]\nlisten = "127.0.0.1:9180"\n')
    config = load_config(config_path=path, data_dir=tmp_path, env={})
    assert config.notify.urls == ("ntfy://ntfy.example/topic-secret1234",) and config.notify.after == 120
    assert config.http.address == "127.0.0.1:9180"
    assert config.warnings == (), "[notify] urls, after and [http] listen are known keys"
    assert "topic-secret" not in repr(config) and "1234" in repr(config.notify)
    env = {"AIME_NOTIFY_URLS": "json://127.0.0.1:9/a  json://127.0.0.1:9/b", "AIME_HTTP_LISTEN": "9181"}
    config = load_config(config_path=path, data_dir=tmp_path, env=env)
    assert config.notify.urls == ("json://127.0.0.1:9/a", "json://127.0.0.1:9/b")
    assert config.http.address == "127.0.0.1:9181"
    defaults = load_config(config_path=tmp_path / "none.toml", data_dir=tmp_path, env={})
    assert defaults.notify.urls == () and defaults.notify.after == 600 and not defaults.http.enabled
    with pytest.raises(ConfigError, match=r"\[notify\] urls: expected a list of URLs"):
        load_config(config_path=write(tmp_path / "bad.toml", "[notify]\nurls = 3\n"), data_dir=tmp_path, env={})


def test_the_demo_leaves_the_files_notify_and_http_to_the_real_instance(tmp_path):
    path = write(tmp_path / "c.toml", '[notify]\nurls = ["ntfy://ntfy.example/mine"]\n[http]\nlisten = "9180"\n')
    demo = load_config(config_path=path, data_dir=tmp_path, env={}, demo=True)
    assert demo.notify.urls == () and not demo.http.enabled
    asked = load_config(config_path=path, data_dir=tmp_path, env={"AIME_HTTP_LISTEN": "9181"}, demo=True)
    assert asked.http.address == "127.0.0.1:9181"
