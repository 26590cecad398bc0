"""A Runway backup restores with stock tools and the passphrase alone: boto3's get_object, then
the README's pipeline (gpg, zstd, pg_restore). No Runway code after the backup is taken."""

import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import BACKUP_PASSPHRASE, s3_client

from dashboard.backups import pipeline
from dashboard.backups.models import Backup
from dashboard.jobs import lifecycle as jobs
from devstack.cluster import Cluster

pytestmark = pytest.mark.django_db

# The README's commands, verbatim (FILE, PASSPHRASE_FILE and NEWDB come from the environment).
README_CUSTOM = (
    'gpg --batch --pinentry-mode loopback --passphrase-file "$PASSPHRASE_FILE" --decrypt "$FILE"'
    ' | zstd -d | pg_restore --no-owner --dbname "$NEWDB"'
)
README_DIRECTORY = (
    'mkdir dump && gpg --batch --pinentry-mode loopback --passphrase-file "$PASSPHRASE_FILE"'
    ' --decrypt "$FILE" | zstd -d | tar -x -C dump && pg_restore --no-owner --jobs 2'
    ' --dbname "$NEWDB" dump'
)

TABLES = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 1"
)


def fingerprint(dsn: str) -> dict[str, Any]:
    """Row counts of every table, and an md5 of the ordered rows of users and payments."""
    with psycopg.connect(dsn) as conn:
        tables = [row[0] for row in conn.execute(TABLES).fetchall()]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
        hashes = {
            t: conn.execute(
                f"SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM {t} AS t"
            ).fetchone()[0]  # type: ignore[index]
            for t in ("users", "payments")
        }
    return {"counts": counts, "hashes": hashes}


@pytest.mark.parametrize(
    ("fmt", "command"), [("custom", README_CUSTOM), ("directory", README_DIRECTORY)]
)
def test_a_backup_in_s3_restores_with_gpg_zstd_and_pg_restore_alone(
    target: Any,
    s3_store: str,
    s3_endpoint: str,
    s3_bucket: str,
    pg_cluster: Cluster,
    tmp_path: Path,
    fmt: str,
    command: str,
) -> None:
    backup = jobs.run("backup", pipeline.request_backup(None, target, format=fmt, enqueue=False).pk)
    assert isinstance(backup, Backup) and backup.completed, backup and backup.error

    # What someone with the bucket and the passphrase (and nothing of Runway) does:
    key = backup.storage_url.removeprefix(f"s3://{s3_bucket}/")
    sealed = tmp_path / Path(key).name
    s3_client(s3_endpoint).download_file(s3_bucket, key, str(sealed))
    passphrase_file = tmp_path / "passphrase"
    passphrase_file.write_text(BACKUP_PASSPHRASE + "\n")
    passphrase_file.chmod(0o600)
    gnupg = tmp_path / "gnupg"
    gnupg.mkdir(mode=0o700)
    newdb = f"restored_{fmt}"
    pg_cluster.create_database(newdb, replace=True)
    env = {
        "PATH": os.environ["PATH"],
        "GNUPGHOME": str(gnupg),
        "FILE": str(sealed),
        "PASSPHRASE_FILE": str(passphrase_file),
        "NEWDB": f"host={pg_cluster.host} port={pg_cluster.port} dbname={newdb} user=postgres",
        "PGPASSWORD": pg_cluster.password,
    }
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], check=False)
    assert done.returncode == 0, done.stderr

    source = fingerprint(
        pg_cluster.dsn(str(psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"]))
    )
    restored = fingerprint(pg_cluster.dsn(newdb))
    assert restored == source
    assert restored["counts"]["users"] == 200 and len(restored["counts"]) == 9
    assert restored["counts"]["users"] == backup.row_counts["users"]
    pg_cluster.execute(f'DROP DATABASE "{newdb}" WITH (FORCE)')
