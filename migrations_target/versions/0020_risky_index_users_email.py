"""RISKY: index users.email with plain CREATE INDEX (no CONCURRENTLY, blocks writes)

Revision ID: 0020
Revises: 0019
Create Date: 2025-09-25 09:12:30.873516+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Deliberately the risky form: CREATE INDEX without CONCURRENTLY takes a SHARE lock on users,
# blocking every INSERT, UPDATE and DELETE until the index is built. The safe form would be
#     with op.get_context().autocommit_block():
#         op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)


def upgrade() -> None:
    op.create_index("ix_users_email", "users", ["email"])


def downgrade() -> None:
    op.drop_index("ix_users_email", table_name="users")
