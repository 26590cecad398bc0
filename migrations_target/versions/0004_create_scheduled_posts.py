"""create scheduled_posts table

Revision ID: 0004
Revises: 0003
Create Date: 2024-02-05 09:31:44.650019+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scheduled_posts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("post_text", sa.Text(), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_scheduled_posts"),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name="fk_scheduled_posts_channel_id_channels",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_scheduled_posts_channel_id", "scheduled_posts", ["channel_id"])


def downgrade() -> None:
    op.drop_index("ix_scheduled_posts_channel_id", table_name="scheduled_posts")
    op.drop_table("scheduled_posts")
