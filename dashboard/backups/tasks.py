"""Thin tasks: ids in, one domain call. Only transient failures (network, an unreachable server)
are retried; the domain functions put the row back in the queue before raising them."""

from celery import shared_task

from dashboard.backups import pipeline, retention, validation

RETRY = {"max_retries": 3, "retry_backoff": 30, "retry_backoff_max": 600, "retry_jitter": True}


@shared_task(bind=True, acks_late=True, autoretry_for=(pipeline.TransientBackupError,), **RETRY)
def run_backup(self, backup_id: int) -> None:  # type: ignore[no-untyped-def]
    pipeline.perform_backup(backup_id, retries_left=self.max_retries - self.request.retries)


@shared_task(bind=True, acks_late=True, autoretry_for=(pipeline.TransientBackupError,), **RETRY)
def run_validation(self, validation_id: int) -> None:  # type: ignore[no-untyped-def]
    left = self.max_retries - self.request.retries
    validation.perform_validation(validation_id, retries_left=left)


@shared_task
def prune_backups() -> None:
    retention.prune()


@shared_task
def reap_stale_backups() -> None:
    pipeline.reap_stale()
    validation.reap_stale()
