"""add reporting indexes

Revision ID: 0015
Revises: 0014
Create Date: 2025-06-02 14:37:05.958140+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The composite index serves every query the single-column one did.
    op.drop_index("ix_payments_user_id", table_name="payments")
    op.create_index("ix_payments_user_id_created_at", "payments", ["user_id", "created_at"])
    op.create_index("ix_subscriptions_status_expires_at", "subscriptions", ["status", "expires_at"])
    op.create_index("ix_users_plan_id", "users", ["plan_id"])


def downgrade() -> None:
    op.drop_index("ix_users_plan_id", table_name="users")
    op.drop_index("ix_subscriptions_status_expires_at", table_name="subscriptions")
    op.drop_index("ix_payments_user_id_created_at", table_name="payments")
    op.create_index("ix_payments_user_id", "payments", ["user_id"])
