"""create channels table

Revision ID: 0003
Revises: 0002
Create Date: 2024-01-22 14:03:27.113540+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_channels"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_channels_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_channels_user_id", "channels", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_channels_user_id", table_name="channels")
    op.drop_table("channels")
