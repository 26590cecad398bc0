"""gpg symmetric AES256, run for real: round trips, a wrong passphrase, the passphrase path."""

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import wait_until

from dashboard.lib import gpg

PASSPHRASE = "correct horse battery staple"


def test_a_file_round_trips_through_encryption(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"PGDMP" + bytes(range(256)) * 4000)
    gpg.encrypt_file(PASSPHRASE, plain, tmp_path / "sealed")
    gpg.decrypt_file(PASSPHRASE, tmp_path / "sealed", tmp_path / "opened")
    assert (tmp_path / "opened").read_bytes() == plain.read_bytes()
    assert plain.read_bytes()[:64] not in (tmp_path / "sealed").read_bytes()


def test_the_output_is_aes256_openpgp_that_stock_gpg_decrypts(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"hello from runway\n")
    gpg.encrypt_file(PASSPHRASE, plain, tmp_path / "sealed")
    (tmp_path / "passphrase").write_text(PASSPHRASE + "\n")
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    stock = [
        "gpg",
        "--homedir",
        str(home),
        "--batch",
        "--pinentry-mode",
        "loopback",
        "--passphrase-file",
        str(tmp_path / "passphrase"),
    ]
    opened = subprocess.run(
        [*stock, "--decrypt", str(tmp_path / "sealed")], capture_output=True, check=True
    )
    assert opened.stdout == b"hello from runway\n"
    assert b"AES256" in opened.stderr
    packets = subprocess.run(
        [*stock, "--list-packets", str(tmp_path / "sealed")], capture_output=True, text=True
    )
    assert "cipher 9" in packets.stdout  # 9 is AES256
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)


def test_a_wrong_passphrase_is_named(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"secret rows")
    gpg.encrypt_file(PASSPHRASE, plain, tmp_path / "sealed")
    with pytest.raises(gpg.WrongPassphrase, match="Wrong passphrase"):
        gpg.decrypt_file("not the passphrase", tmp_path / "sealed", tmp_path / "opened")


def test_data_that_is_not_gpg_is_named(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"this is not openpgp at all" * 10)
    with pytest.raises(gpg.GpgError, match="not valid GPG data"):
        gpg.decrypt_file(PASSPHRASE, tmp_path / "junk", tmp_path / "opened")


@pytest.mark.parametrize("passphrase", ["", None, "two\nlines"])
def test_a_missing_or_malformed_passphrase_is_refused(passphrase: str | None) -> None:
    with pytest.raises(gpg.NoPassphrase):
        gpg.Gpg(passphrase)


def test_the_passphrase_is_neither_in_gpgs_arguments_nor_its_environment() -> None:
    with gpg.Gpg(PASSPHRASE) as session:
        proc = session.encrypt(
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_until(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes(), "gpg to start")
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            assert b"--passphrase-fd" in cmdline
            assert PASSPHRASE.encode() not in cmdline
            assert PASSPHRASE.encode() not in environ
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            assert proc.wait() == 0


def agents_of(home: Path) -> list[bytes]:
    found = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home}"], capture_output=True)
    return found.stdout.split()


def test_each_session_has_a_private_home_and_leaves_no_agent_behind(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    with gpg.Gpg(PASSPHRASE) as session, plain.open("rb") as fin:
        home = session.home
        assert home is not None and home.stat().st_mode & 0o777 == 0o700
        proc = session.encrypt(stdin=fin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert proc.wait() == 0
        # Whether or not gpg needed one, an agent started in the home is ended with it.
        subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True)
        assert agents_of(home)
    assert not home.exists()
    wait_until(lambda: not agents_of(home), "gpg-agent to exit", timeout=10)


def test_a_home_left_by_a_killed_process_is_removed_by_the_next_session() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = Path(tempfile.gettempdir()) / f"{gpg.HOME_PREFIX}{dead.pid}-abcd1234"
    left.mkdir(mode=0o700)
    (left / "pubring.kbx").write_bytes(b"")
    mine = Path(tempfile.mkdtemp(prefix=f"{gpg.HOME_PREFIX}{os.getpid()}-"))
    try:
        with gpg.Gpg(PASSPHRASE):
            assert not left.exists()
            assert mine.exists()  # this process is alive: its homes stay
    finally:
        mine.rmdir()
