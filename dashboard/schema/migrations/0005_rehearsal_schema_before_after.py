from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('schema', '0004_data_snapshot'),
    ]

    operations = [
        migrations.AddField(
            model_name='rehearsal',
            name='schema_before',
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name='rehearsal',
            name='schema_after',
            field=models.TextField(blank=True),
        ),
    ]
