"""The settings' parsers: ``NAME`` or ``NAME_FILE``, booleans, numbers, lists, DATABASE_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.lib import env as envmod
from dashboard.lib.env import database_from_url, env, envbool, envint, envlist

NAME = "RUNWAY_TEST_ENV_SETTING"


@pytest.fixture(autouse=True)
def unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    monkeypatch.delenv(f"{NAME}_FILE", raising=False)


def secret_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "secret"
    path.write_text(text)
    return path


# --- env ---


def test_it_reads_the_variable(monkeypatch):
    monkeypatch.setenv(NAME, "value")
    assert env(NAME, "default") == "value"


def test_it_falls_back_to_the_default(monkeypatch):
    assert env(NAME, "default") == "default"
    assert env(NAME) == ""


def test_an_empty_variable_is_a_value_not_a_missing_one(monkeypatch):
    monkeypatch.setenv(NAME, "")
    assert env(NAME, "default") == ""


def test_it_reads_name_file_stripped(monkeypatch, tmp_path):
    monkeypatch.setenv(f"{NAME}_FILE", str(secret_file(tmp_path, "  s3cret\n\n")))
    assert env(NAME, "default") == "s3cret"


def test_the_variable_wins_over_the_file(monkeypatch, tmp_path):
    monkeypatch.setenv(NAME, "direct")
    monkeypatch.setenv(f"{NAME}_FILE", str(secret_file(tmp_path, "from-file")))
    assert env(NAME) == "direct"


def test_an_empty_name_file_means_no_file(monkeypatch):
    monkeypatch.setenv(f"{NAME}_FILE", "")
    assert env(NAME, "default") == "default"


def test_a_missing_name_file_fails_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv(f"{NAME}_FILE", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError):
        env(NAME, "default")


def test_it_records_every_name_it_was_asked_for(monkeypatch):
    monkeypatch.setattr(envmod, "NAMES_READ", set())
    env(NAME)
    names = envmod.NAMES_READ
    assert names == {NAME, f"{NAME}_FILE"}


def test_it_records_the_resolved_path_of_every_file_it_read(monkeypatch, tmp_path):
    monkeypatch.setattr(envmod, "FILES_READ", set())
    real = secret_file(tmp_path, "s3cret")
    link = tmp_path / "link"
    link.symlink_to(real)
    monkeypatch.setenv(f"{NAME}_FILE", str(link))
    env(NAME)
    files = envmod.FILES_READ
    assert files == {real.resolve()}


def test_a_variable_read_directly_records_no_file(monkeypatch, tmp_path):
    monkeypatch.setattr(envmod, "FILES_READ", set())
    monkeypatch.setenv(NAME, "direct")
    monkeypatch.setenv(f"{NAME}_FILE", str(secret_file(tmp_path, "from-file")))
    env(NAME)
    files = envmod.FILES_READ
    assert files == set()


def test_runways_settings_recorded_what_they_read():
    # The settings module ran at start-up: a password reference may never name these.
    assert {"RUNWAY_SECRET_KEY", "RUNWAY_SECRET_KEY_FILE", "DATABASE_URL"} <= envmod.NAMES_READ


# --- envbool ---


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "On", " on "])
def test_envbool_reads_true(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert envbool(NAME, False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", ""])
def test_envbool_reads_false(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    assert envbool(NAME, True) is False


@pytest.mark.parametrize("default", [True, False])
def test_envbool_falls_back_to_the_default(default):
    assert envbool(NAME, default) is default


def test_envbool_refuses_anything_else_naming_the_setting(monkeypatch):
    monkeypatch.setenv(NAME, "maybe")
    with pytest.raises(ValueError, match=rf"{NAME}='maybe' is not a boolean"):
        envbool(NAME, False)


def test_envbool_reads_a_file_too(monkeypatch, tmp_path):
    monkeypatch.setenv(f"{NAME}_FILE", str(secret_file(tmp_path, "yes\n")))
    assert envbool(NAME, False) is True


# --- envint ---


def test_envint_reads_a_whole_number(monkeypatch):
    monkeypatch.setenv(NAME, " 42 ")
    assert envint(NAME, 1) == 42


def test_envint_reads_a_negative_number(monkeypatch):
    monkeypatch.setenv(NAME, "-3")
    assert envint(NAME, 1) == -3


def test_envint_falls_back_to_the_default():
    assert envint(NAME, 7) == 7


@pytest.mark.parametrize("raw", ["1.5", "ten", "", "1e3"])
def test_envint_refuses_anything_else_naming_the_setting(monkeypatch, raw):
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ValueError, match=rf"{NAME}=.* is not a whole number"):
        envint(NAME, 1)


# --- envlist ---


def test_envlist_splits_on_commas_and_drops_blanks(monkeypatch):
    monkeypatch.setenv(NAME, " a.example, b.example ,,  ,c ")
    assert envlist(NAME) == ["a.example", "b.example", "c"]


def test_envlist_falls_back_to_the_default():
    assert envlist(NAME, "127.0.0.1,localhost") == ["127.0.0.1", "localhost"]
    assert envlist(NAME) == []


def test_envlist_of_an_empty_variable_is_empty_not_the_default(monkeypatch):
    monkeypatch.setenv(NAME, "")
    assert envlist(NAME, "x,y") == []


# --- database_from_url ---


def test_database_from_url_reads_every_part():
    assert database_from_url("postgresql://runway:pw@db.internal:6543/runway_prod") == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "runway_prod",
        "USER": "runway",
        "PASSWORD": "pw",
        "HOST": "db.internal",
        "PORT": "6543",
        "CONN_MAX_AGE": 0,
    }


def test_database_from_url_unquotes_the_user_password_and_name():
    parsed = database_from_url("postgres://run%40way:p%2Fw%3A%40@db/my%20db")
    assert (parsed["USER"], parsed["PASSWORD"], parsed["NAME"]) == ("run@way", "p/w:@", "my db")


def test_database_from_url_defaults_what_is_left_out():
    parsed = database_from_url("postgresql://db.internal")
    assert parsed["NAME"] == "runway"
    assert (parsed["USER"], parsed["PASSWORD"], parsed["PORT"]) == ("", "", "")
    assert parsed["HOST"] == "db.internal"


def test_database_from_url_refuses_another_scheme_without_echoing_the_url():
    with pytest.raises(ValueError, match="must start with postgresql://") as refused:
        database_from_url("mysql://root:hunter2@db/app")
    assert "hunter2" not in str(refused.value)
