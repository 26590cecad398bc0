from django.apps import AppConfig


class SchemaConfig(AppConfig):
    name = "dashboard.schema"
    label = "schema"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.databases import checks

        # Each registers its job kind (gate_run, rehearsal) with the lifecycle.
        from dashboard.schema import analysis, gates, rehearsal  # noqa: F401
        from dashboard.schema.models import GateRun, Rehearsal

        # The audit page links gate runs' and rehearsals' events to their pages.
        links.register_page("gaterun", GateRun, "schema-gate-run", "database__name", "pk")
        links.register_page("rehearsal", Rehearsal, "schema-rehearsal", "database__name", "pk")
        # A check that finds pending revisions has them analysed on the worker (stored).
        checks.AFTER_CONNECTED.append(analysis.analyse_pending)
