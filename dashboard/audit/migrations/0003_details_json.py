"""Each event keeps its details' canonical text (``AuditEvent.details_json``), written once.

Existing events get theirs here, from their stored details, the way ``chain.verify`` reads them
(sorted keys, no spaces, as ``chain.canonical_details`` writes them), a batch at a time. The
append-only trigger is switched off for this one backfill, inside the migration's transaction,
and on again before it commits.
"""

import json

from django.db import migrations, models

BATCH = 5000
canonical_details = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False
).encode


def backfill(apps, schema_editor):
    AuditEvent = apps.get_model("audit", "AuditEvent")
    table = AuditEvent._meta.db_table
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER audit_append_only")
        last = 0
        while True:
            rows = list(
                AuditEvent.objects.filter(id__gt=last)
                .order_by("id")
                .values_list("id", "details")[:BATCH]
            )
            if not rows:
                break
            cursor.execute(
                f"UPDATE {table} AS e SET details_json = v.text "
                "FROM unnest(%s::bigint[], %s::text[]) AS v(id, text) WHERE e.id = v.id",
                [[pk for pk, _ in rows], [canonical_details(d) for _, d in rows]],
            )
            last = rows[-1][0]
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER audit_append_only")


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_created_at_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="details_json",
            field=models.TextField(default="", editable=False),
            preserve_default=False,
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=False),
    ]
