"""GPG symmetric encryption (AES256) as streaming subprocesses. The only module that runs gpg.

The passphrase reaches gpg through an anonymous pipe (``--passphrase-fd``): never on a command
line, in an environment variable, in a file on disk or in a log. Each :class:`Gpg` session has its
own ``GNUPGHOME`` in a fresh temporary folder, removed when the session ends, and any
``gpg-agent`` started there is killed then (with the S2K count given, symmetric encryption and
decryption need no agent, so a killed worker leaves none running). What gpg writes is plain
OpenPGP, so a backup decrypts with nothing but the passphrase:

    gpg --batch --pinentry-mode loopback --passphrase-file F --decrypt backup.gpg
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

GPG = "gpg"
GPGCONF = "gpgconf"
HOME_PREFIX = "runway-gnupg-"
# A passphrase larger than a pipe's buffer would block the write before gpg starts reading.
MAX_PASSPHRASE_BYTES = 4096
COMMON_OPTIONS = (
    "--batch",
    "--yes",
    "--quiet",
    "--no-symkey-cache",
    "--pinentry-mode",
    "loopback",
)
# Compression is an earlier stage of the pipeline. The S2K count is gpg's own maximum: stating it
# spares the agent a second of calibrating (which lands on the same value on current hardware).
ENCRYPT_OPTIONS = (
    "--symmetric",
    "--cipher-algo",
    "AES256",
    "--compress-algo",
    "none",
    "--s2k-mode",
    "3",
    "--s2k-digest-algo",
    "SHA256",
    "--s2k-count",
    "65011712",
)
_SAFE_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


class GpgError(RuntimeError):
    """gpg failed; the message says why in a person's words."""

    transient = False


class WrongPassphrase(GpgError):
    pass


class NoPassphrase(GpgError):
    pass


def check_passphrase(passphrase: str | None) -> str:
    if not passphrase:
        raise NoPassphrase(
            "No backup passphrase is set: set RUNWAY_BACKUP_PASSPHRASE (or "
            "RUNWAY_BACKUP_PASSPHRASE_FILE, a file holding it) on the workers."
        )
    if "\n" in passphrase.rstrip("\n") or len(passphrase.encode()) > MAX_PASSPHRASE_BYTES:
        raise NoPassphrase(
            f"The backup passphrase must be one line of at most {MAX_PASSPHRASE_BYTES} bytes."
        )
    return passphrase.rstrip("\n")


def explain(returncode: int, stderr: str) -> GpgError:
    """A clear error for a gpg that exited with ``returncode`` after writing ``stderr``."""
    text = stderr.lower()
    if "bad session key" in text or "bad passphrase" in text:
        return WrongPassphrase(
            "Wrong passphrase: gpg could not decrypt the backup with the configured "
            "RUNWAY_BACKUP_PASSPHRASE (Bad session key)."
        )
    if "has been manipulated" in text or "mdc" in text:
        return GpgError(
            "The backup was altered after it was written: gpg's integrity check failed "
            "(encrypted message has been manipulated)."
        )
    if "no valid openpgp data" in text or "unexpected end of file" in text:
        return GpgError("The backup is not valid GPG data (truncated or not a Runway backup).")
    lines = [
        line.removeprefix("gpg: ").strip()
        for line in stderr.splitlines()
        if line.strip() and "keybox" not in line
    ]
    detail = "; ".join(lines[-3:]) or f"exit {returncode}"
    return GpgError(f"gpg failed (exit {returncode}): {detail}")


class Gpg:
    """A gpg session: ``with Gpg(passphrase) as g: proc = g.encrypt(stdin=..., stdout=...)``."""

    def __init__(self, passphrase: str | None) -> None:
        self._passphrase = check_passphrase(passphrase)
        self.home: Path | None = None

    def __enter__(self) -> Gpg:
        sweep_dead_homes()
        self.home = Path(tempfile.mkdtemp(prefix=f"{HOME_PREFIX}{os.getpid()}-"))
        self.home.chmod(0o700)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.home is None:
            return
        subprocess.run(
            [GPGCONF, "--homedir", str(self.home), "--kill", "gpg-agent"],
            env=_env(),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.home, ignore_errors=True)
        self.home = None

    def encrypt(self, *, stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen:
        """Start ``gpg --symmetric`` reading ``stdin`` and writing OpenPGP to ``stdout``."""
        return self._start(ENCRYPT_OPTIONS, stdin=stdin, stdout=stdout, stderr=stderr)

    def decrypt(self, *, stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen:
        """Start ``gpg --decrypt``; a wrong passphrase makes it exit 2 (see :func:`explain`)."""
        return self._start(("--decrypt",), stdin=stdin, stdout=stdout, stderr=stderr)

    def _start(
        self, action: tuple[str, ...], *, stdin: Any, stdout: Any, stderr: Any
    ) -> subprocess.Popen:
        if self.home is None:
            raise RuntimeError("use Gpg as a context manager")
        read_fd, write_fd = os.pipe()
        try:
            os.write(write_fd, self._passphrase.encode() + b"\n")
            os.close(write_fd)
            write_fd = -1
            argv = [
                GPG,
                "--homedir",
                str(self.home),
                *COMMON_OPTIONS,
                "--passphrase-fd",
                str(read_fd),
                *action,
            ]
            return subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=(read_fd,),
                env=_env(),
            )
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)


def sweep_dead_homes() -> None:
    """Remove the homes of sessions whose process died without ending them (a killed worker).
    They hold no secret (the passphrase only ever travels through a pipe), only clutter."""
    for home in Path(tempfile.gettempdir()).glob(f"{HOME_PREFIX}*-*"):
        pid = home.name.removeprefix(HOME_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            subprocess.run(
                [GPGCONF, "--homedir", str(home), "--kill", "gpg-agent"],
                env=_env(),
                capture_output=True,
                check=False,
            )
            shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _env() -> dict[str, str]:
    # gpg needs none of the worker's secrets (S3 keys, database passwords): give it none.
    return {k: v for k, v in os.environ.items() if k in _SAFE_ENV or k.startswith("LC_")}


def _run_file(passphrase: str | None, src: Path, dst: Path, *, decrypt: bool) -> None:
    with (
        Gpg(passphrase) as gpg,
        src.open("rb") as fin,
        dst.open("wb") as fout,
        tempfile.TemporaryFile() as err,
    ):
        start = gpg.decrypt if decrypt else gpg.encrypt
        proc = start(stdin=fin, stdout=fout, stderr=err)
        if proc.wait() != 0:
            err.seek(0)
            raise explain(proc.returncode, err.read().decode(errors="replace"))


def encrypt_file(passphrase: str | None, src: Path, dst: Path) -> None:
    _run_file(passphrase, src, dst, decrypt=False)


def decrypt_file(passphrase: str | None, src: Path, dst: Path) -> None:
    _run_file(passphrase, src, dst, decrypt=True)
