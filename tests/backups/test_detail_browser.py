"""In Chromium: a backup's detail page with long keys, hashes, URLs and commands keeps them in
its own boxes (no sideways scroll of the page) at 1280 and 800 px."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import backup_outcome, log_in, make_database, validation_outcome

from dashboard.backups.models import Backup, Validation

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG_KEY = "active_users_with_a_verified_email_and_a_paid_plan_in_the_last_ninety_days_total"
COMMAND = (
    "pg_restore --dbname=postgresql://runway_scratch@127.0.0.1:5432/"
    "runway_validation_scratch_0000000000000123456789 --no-owner --no-privileges --exit-on-error "
    "--single-transaction /var/lib/runway/backups/analyticbot/2026/12/02/"
    "analyticbot-20261202T074158Z-0000000000000000000123.dump.zst.gpg"
)


def long_backup(db):
    taken = timezone.now() - timedelta(hours=2)
    backup = Backup.objects.create(
        database=db,
        **backup_outcome("completed"),
        size_bytes=3_400_000,
        duration_s=4.2,
        started_at=taken,
        finished_at=taken + timedelta(seconds=5),
        sha256="ab12cd34ef56" * 5 + "abcd",
        revision="0016",
        storage_url="s3://runway-backups-of-every-database-we-run/runway/analyticbot/2026/12/02/"
        "analyticbot-20261202T074158Z-0000000000000000000123.dump.zst.gpg",
        row_counts={"users": 200, "payments_of_the_subscriptions_by_plan_and_currency_long": 340},
        facts={LONG_KEY: 123456, "plans": 4},
    )
    Validation.objects.create(
        backup=backup,
        **validation_outcome("failed"),
        finished_at=taken + timedelta(minutes=1),
        error=f"{COMMAND} exited 1: pg_restore: error: could not execute query",
        checks=[
            {
                "name": "orphaned rows: payments_of_the_subscriptions_by_plan_and_currency_long."
                "subscription_id -> subscriptions_of_every_customer_account.id",
                "ok": False,
                "expected": 0,
                "found": 3,
                "detail": COMMAND,
            }
        ],
        scratch_database="runway_validation_scratch_0000000000000123456789",
    )
    return backup


@pytest.mark.parametrize("width", [1280, 800])
def test_the_detail_page_keeps_long_values_in_its_boxes(
    page, live_server, viewer, artifacts, width
):
    db = make_database()
    backup = long_backup(db)
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page, live_server, "vera")
    page.goto(f"{live_server.url}/databases/{db.name}/backups/{backup.pk}/")
    assert page.locator("h1").inner_text().startswith(f"Backup #{backup.pk}")
    page_width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert page_width <= viewport, f"the page scrolls sideways: {page_width} > {viewport}"
    # Each card stays inside the page, and so does everything in it.
    overflowing = page.evaluate(
        """() => {
            const edge = document.documentElement.clientWidth + 0.5;
            return [...document.querySelectorAll('main .card *')]
                .filter(e => e.getBoundingClientRect().right > edge)
                .map(e => e.tagName + '.' + e.className);
        }"""
    )
    assert overflowing == []
    assert page.get_by_text(LONG_KEY).is_visible()
    page.screenshot(path=artifacts / f"backup-detail-{width}.png", full_page=True)
