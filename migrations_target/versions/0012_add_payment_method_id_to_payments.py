"""add payment_method_id to payments

Revision ID: 0012
Revises: 0011
Create Date: 2024-09-09 12:44:57.196308+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("payment_method_id", sa.Integer(), nullable=True))
    op.create_foreign_key(
        "fk_payments_payment_method_id_payment_methods",
        "payments",
        "payment_methods",
        ["payment_method_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_index("ix_payments_payment_method_id", "payments", ["payment_method_id"])


def downgrade() -> None:
    op.drop_index("ix_payments_payment_method_id", table_name="payments")
    op.drop_constraint(
        "fk_payments_payment_method_id_payment_methods", "payments", type_="foreignkey"
    )
    op.drop_column("payments", "payment_method_id")
