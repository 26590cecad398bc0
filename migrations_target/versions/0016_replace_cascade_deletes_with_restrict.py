"""replace cascade deletes with restrict

Revision ID: 0016
Revises: 0015
Create Date: 2025-09-15 11:03:22.187643+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every foreign key that points at user data: (constraint, table, column, referenced table).
# Deleting a user, channel, post, subscription or payment method must never silently take
# other user data with it.
USER_DATA_FOREIGN_KEYS = [
    ("fk_channels_user_id_users", "channels", "user_id", "users"),
    ("fk_scheduled_posts_channel_id_channels", "scheduled_posts", "channel_id", "channels"),
    (
        "fk_sent_posts_scheduled_post_id_scheduled_posts",
        "sent_posts",
        "scheduled_post_id",
        "scheduled_posts",
    ),
    ("fk_payment_methods_user_id_users", "payment_methods", "user_id", "users"),
    ("fk_subscriptions_user_id_users", "subscriptions", "user_id", "users"),
    ("fk_payments_user_id_users", "payments", "user_id", "users"),
    (
        "fk_payments_subscription_id_subscriptions",
        "payments",
        "subscription_id",
        "subscriptions",
    ),
    (
        "fk_payments_payment_method_id_payment_methods",
        "payments",
        "payment_method_id",
        "payment_methods",
    ),
]


def _replace_delete_rule(ondelete: str) -> None:
    for name, table, column, referenced in USER_DATA_FOREIGN_KEYS:
        op.drop_constraint(name, table, type_="foreignkey")
        op.create_foreign_key(name, table, referenced, [column], ["id"], ondelete=ondelete)


def upgrade() -> None:
    _replace_delete_rule("RESTRICT")


def downgrade() -> None:
    _replace_delete_rule("CASCADE")
