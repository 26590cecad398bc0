"""add feature flag to users

Revision ID: 0017
Revises: 0016
Create Date: 2025-09-22 10:05:41.220914+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A constant default: on PostgreSQL 11+ this is a catalog-only change, no table rewrite.
    op.add_column(
        "users",
        sa.Column(
            "new_feature_flag", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_column("users", "new_feature_flag")
