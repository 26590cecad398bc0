"""expand: add nullable users.email_new (widening email to 500)

Revision ID: 0018
Revises: 0017
Create Date: 2025-09-24 15:48:12.604331+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Expand/contract widening of users.email from VARCHAR(255) to VARCHAR(500):
#   0018 (this) adds the new nullable column: a catalog-only change, no rewrite, brief lock;
#   0019 backfills it in batches; a later release switches reads and drops the old column.
# The unsafe one-step form would be ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(500).


def upgrade() -> None:
    op.add_column("users", sa.Column("email_new", sa.String(length=500), nullable=True))


def downgrade() -> None:
    op.drop_column("users", "email_new")
