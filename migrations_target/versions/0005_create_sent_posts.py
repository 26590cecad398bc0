"""create sent_posts table

Revision ID: 0005
Revises: 0004
Create Date: 2024-02-12 16:20:09.284471+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sent_posts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("scheduled_post_id", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "sent_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sent_posts"),
        sa.ForeignKeyConstraint(
            ["scheduled_post_id"],
            ["scheduled_posts.id"],
            name="fk_sent_posts_scheduled_post_id_scheduled_posts",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_sent_posts_scheduled_post_id", "sent_posts", ["scheduled_post_id"])


def downgrade() -> None:
    op.drop_index("ix_sent_posts_scheduled_post_id", table_name="sent_posts")
    op.drop_table("sent_posts")
