"""backfill users.email_new from email in batches

Revision ID: 0019
Revises: 0018
Create Date: 2025-09-24 16:30:57.118204+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each batch is its own short transaction (an autocommit block), so no long lock is held on
# users and a failure part-way keeps the batches already done. Re-running is safe: a batch only
# touches rows whose email_new still differs from email.
BATCH_SIZE = 10_000

BACKFILL = sa.text(
    "UPDATE users SET email_new = email "
    "WHERE id >= :low AND id < :high AND email_new IS DISTINCT FROM email"
)
RESET = sa.text(
    "UPDATE users SET email_new = NULL WHERE id >= :low AND id < :high AND email_new IS NOT NULL"
)


def _in_batches(statement: sa.TextClause) -> None:
    context = op.get_context()
    if context.as_sql:
        # Offline (--sql): there is no database to read the id range from. Render one
        # representative batch; a DBA running the script repeats it over the id range.
        with context.autocommit_block():
            op.execute(f"-- repeat for each id range [low, low + {BATCH_SIZE}) up to max(users.id)")
            op.execute(statement.bindparams(low=1, high=1 + BATCH_SIZE))
        return
    with context.autocommit_block():
        bind = op.get_bind()
        low, high = bind.execute(sa.text("SELECT min(id), max(id) FROM users")).one()
        if low is None:
            return
        while low <= high:
            bind.execute(statement, {"low": low, "high": low + BATCH_SIZE})
            low += BATCH_SIZE


def upgrade() -> None:
    _in_batches(BACKFILL)


def downgrade() -> None:
    _in_batches(RESET)
