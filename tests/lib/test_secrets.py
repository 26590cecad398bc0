"""Password references and their scope (dashboard/lib/secrets.py), on the real file system."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.lib.secrets import Password, Scope, SecretError, check_reference, resolve


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "app.password").write_text("s3cret-app\n")
    (tmp_path / "own").mkdir()
    (tmp_path / "own" / "key").write_text("runway-own-key\n")
    return tmp_path


def scope(folder: Path, **kwargs) -> Scope:
    kwargs.setdefault("env_prefix", "RUNWAY_DB_")
    kwargs.setdefault("secrets_dir", folder / "db")
    kwargs.setdefault("own_names", ["RUNWAY_SECRET_KEY", "RUNWAY_SECRET_KEY_FILE"])
    kwargs.setdefault("own_paths", [folder / "own" / "key"])
    kwargs.setdefault("own_values", ["runway-own-key"])
    return Scope.build(**kwargs)


def test_an_in_scope_file_resolves_to_a_password_that_hides_itself(folder):
    password = resolve(f"file:{folder}/db/app.password", scope(folder))
    assert password == "s3cret-app" and isinstance(password, Password)
    assert "s3cret" not in repr(password) and password.require_auth == "scram-sha-256"


def test_an_in_scope_variable_resolves(folder, monkeypatch):
    monkeypatch.setenv("RUNWAY_DB_APP", "from-env")
    assert resolve("env:RUNWAY_DB_APP", scope(folder), require_auth="scram-sha-256,md5") == (
        "from-env"
    )


@pytest.mark.parametrize(
    "ref,rule",
    [
        ("env:HOME", "must start with RUNWAY_DB_"),
        ("env:PGPASSWORD", "Runway's own settings or a library's"),
        ("env:AWS_SECRET_ACCESS_KEY", "Runway's own settings or a library's"),
        ("file:/etc/passwd", "inside the secrets directory"),
        ("file:{folder}/db/../own/key", "inside the secrets directory"),
        ("file:{folder}/dbx/app.password", "inside the secrets directory"),
    ],
)
def test_references_out_of_scope_are_refused_naming_the_rule(folder, ref, rule):
    ref = ref.format(folder=folder)
    with pytest.raises(SecretError, match=rule):
        check_reference(ref, scope(folder))
    with pytest.raises(SecretError, match=rule):
        resolve(ref, scope(folder))


def test_a_prefix_that_would_allow_runways_own_settings_still_refuses_them(folder, monkeypatch):
    monkeypatch.setenv("RUNWAY_SECRET_KEY", "runway-own-key")
    wide = scope(folder, env_prefix="")
    for ref in ("env:RUNWAY_SECRET_KEY", "env:RUNWAY_SECRET_KEY_FILE"):
        with pytest.raises(SecretError, match="Runway's own settings"):
            resolve(ref, wide)


def test_runways_own_file_is_refused_even_inside_the_directory(folder):
    wide = scope(folder, secrets_dir=folder)
    with pytest.raises(SecretError, match="holds one of Runway's own secrets"):
        resolve(f"file:{folder}/own/key", wide)


def test_a_symlink_out_of_the_directory_is_refused_and_one_inside_is_followed(folder):
    (folder / "db" / "escape").symlink_to(folder / "own" / "key")
    (folder / "db" / "alias").symlink_to(folder / "db" / "app.password")
    with pytest.raises(SecretError, match="symbolic link"):
        resolve(f"file:{folder}/db/escape", scope(folder))
    assert resolve(f"file:{folder}/db/alias", scope(folder)) == "s3cret-app"


def test_a_copy_of_an_own_secret_is_refused_by_its_value(folder):
    (folder / "db" / "copy").write_text("runway-own-key\n")
    with pytest.raises(SecretError, match="resolves to one of Runway's own secrets"):
        resolve(f"file:{folder}/db/copy", scope(folder))


def test_without_a_secrets_directory_file_references_are_off(folder):
    with pytest.raises(SecretError, match="RUNWAY_SECRETS_DIR"):
        resolve(f"file:{folder}/db/app.password", scope(folder, secrets_dir=None))


def test_a_folder_or_device_is_not_a_password_file(folder):
    (folder / "db" / "sub").mkdir()
    with pytest.raises(SecretError, match="not a password file"):
        resolve(f"file:{folder}/db/sub", scope(folder))


def test_a_name_longer_than_the_file_system_allows_is_refused_not_raised(folder):
    # Path.exists() raises OSError (ENAMETOOLONG) for a component over 255 bytes.
    ref = f"file:{folder}/db/{'x' * 300}"
    assert check_reference(ref, scope(folder)) == ref  # may exist on a worker: checked there
    with pytest.raises(SecretError, match="The password file cannot be read: File name too long"):
        resolve(ref, scope(folder))


@pytest.mark.parametrize("typed", ["hunter2", "env:hunter2", "file:hunter2", "env:hunter-2"])
def test_no_refusal_repeats_what_was_typed(folder, typed):
    with pytest.raises(SecretError) as refused:
        check_reference(typed, scope(folder))
    assert "hunter" not in str(refused.value)


def test_runways_own_configuration_is_resolved_without_a_scope(folder):
    assert resolve(f"file:{folder}/own/key") == "runway-own-key"
