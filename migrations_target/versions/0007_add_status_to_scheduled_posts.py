"""add status to scheduled_posts

Revision ID: 0007
Revises: 0006
Create Date: 2024-03-18 13:55:02.305118+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "scheduled_posts",
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
    )
    op.create_index(
        "ix_scheduled_posts_status_scheduled_at", "scheduled_posts", ["status", "scheduled_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_scheduled_posts_status_scheduled_at", table_name="scheduled_posts")
    op.drop_column("scheduled_posts", "status")
