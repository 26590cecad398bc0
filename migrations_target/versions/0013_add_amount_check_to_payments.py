"""add non-negative amount check to payments

Revision ID: 0013
Revises: 0012
Create Date: 2024-11-18 17:02:31.675530+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_check_constraint("ck_payments_amount_non_negative", "payments", "amount >= 0")


def downgrade() -> None:
    op.drop_constraint("ck_payments_amount_non_negative", "payments", type_="check")
