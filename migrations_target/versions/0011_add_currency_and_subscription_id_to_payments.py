"""add currency and subscription_id to payments

Revision ID: 0011
Revises: 0010
Create Date: 2024-07-01 10:26:13.830475+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "payments",
        sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False),
    )
    op.add_column("payments", sa.Column("subscription_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "fk_payments_subscription_id_subscriptions",
        "payments",
        "subscriptions",
        ["subscription_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_payments_subscription_id", "payments", ["subscription_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_subscription_id", table_name="payments")
    op.drop_constraint("fk_payments_subscription_id_subscriptions", "payments", type_="foreignkey")
    op.drop_column("payments", "subscription_id")
    op.drop_column("payments", "currency")
