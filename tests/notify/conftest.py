"""Real receivers for notifications: an SMTP server (aiosmtpd) and an HTTP webhook receiver on
loopback, started by the tests; and real Celery workers that deliver to them."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from devstack.cluster import free_port


@dataclass
class Mail:
    sender: str
    to: list[str]
    text: str


class Inbox:
    """aiosmtpd's handler: every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Mail] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes, policy

        message = message_from_bytes(envelope.original_content, policy=policy.default)
        body = message.get_body(("plain",))
        text = f"Subject: {message['Subject']}\n\n{body.get_content() if body else ''}"
        self.messages.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), text))
        return "250 Message accepted"


@dataclass
class SmtpServer:
    port: int
    inbox: Inbox


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield SmtpServer(controller.port, inbox)
    finally:
        controller.stop()


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Receiver:
    """A webhook receiver: what each path answers (a status, or "hang" for 30 s then 200), one
    answer per request in order (the last repeats), and every request it got."""

    port: int
    plans: dict[str, list[Any]] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    in_flight: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *answers: Any) -> str:
        with self.lock:
            self.plans[path] = list(answers)
        return path

    def bodies(self, path: str) -> list[Any]:
        with self.lock:
            return [r.body for r in self.received if r.path == path]

    def next_answer(self, path: str) -> Any:
        with self.lock:
            answers = self.plans.get(path, [200])
            return answers.pop(0) if len(answers) > 1 else answers[0]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            answer = receiver.next_answer(self.path)
            with receiver.lock:
                receiver.received.append(
                    Received(self.path, dict(self.headers), body, time.monotonic())
                )
                receiver.in_flight.add(self.path)
            try:
                if answer == "hang":
                    time.sleep(30)
                    answer = 200
                self.send_response(answer)
                self.send_header("Content-Type", "text/plain")
                reply = b"ok" if answer < 400 else b"no_service"
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass  # the client gave up (its timeout)
            finally:
                with receiver.lock:
                    receiver.in_flight.discard(self.path)

    return Handler


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver(free_port())
    server = ThreadingHTTPServer(("127.0.0.1", receiver.port), _handler(receiver))
    server.daemon_threads = True
    server.block_on_close = False  # a hanging handler must not hold the teardown
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


# Webhook URLs live in the environment, as in production: the test process (the forms check
# them) and the workers (they send) read the same variables.
HOOKS = ("JSON", "SLACK", "FLAKY", "GONE", "HANG", "TEST")


def hook_env(name: str) -> str:
    return f"RUNWAY_WEBHOOK_T_{name}"


@dataclass
class Workers:
    jobs_queue: str
    notify_queue: str
    smtp: SmtpServer
    receiver: Receiver
    public_url: str = "http://runway.test"


@pytest.fixture(scope="session")
def notify_workers(
    worker_env: dict[str, str],
    smtp_server: SmtpServer,
    webhook_receiver: Receiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Workers]:
    """Two real workers: one for run steps and other jobs, one for deliveries only
    (RUNWAY_NOTIFY_QUEUE), configured for the local receivers."""
    import contextlib
    import os

    from helpers import worker_process

    suffix = f"{os.getpid()}-{time.monotonic_ns() % 10**6}"
    workers = Workers(
        f"notify-jobs-{suffix}", f"notify-send-{suffix}", smtp_server, webhook_receiver
    )
    for name in HOOKS:
        os.environ[hook_env(name)] = webhook_receiver.url(f"/{name.lower()}")
    env = {
        **worker_env,
        **{hook_env(name): os.environ[hook_env(name)] for name in HOOKS},
        "RUNWAY_NOTIFY_QUEUE": workers.notify_queue,
        "RUNWAY_PUBLIC_URL": workers.public_url,
        "RUNWAY_EMAIL_HOST": "127.0.0.1",
        "RUNWAY_EMAIL_PORT": str(smtp_server.port),
        "RUNWAY_EMAIL_USE_TLS": "0",
        "RUNWAY_WEBHOOK_ALLOW_PRIVATE": "1",
        "RUNWAY_WEBHOOK_TIMEOUT": "8",
        "RUNWAY_NOTIFY_RETRY_DELAYS": "0.5",
    }
    logs = tmp_path_factory.mktemp("notify-workers")
    with contextlib.ExitStack() as stack:
        stack.enter_context(worker_process(env, workers.jobs_queue, Path(logs / "jobs.log")))
        stack.enter_context(worker_process(env, workers.notify_queue, Path(logs / "send.log")))
        yield workers


@pytest.fixture
def delivering(notify_workers: Workers, settings: Any) -> Workers:
    """This test process sends as the workers do: the same queues, mail server and URLs."""
    settings.RUNWAY_JOB_QUEUE = notify_workers.jobs_queue
    settings.RUNWAY_NOTIFY_QUEUE = notify_workers.notify_queue
    settings.RUNWAY_PUBLIC_URL = notify_workers.public_url
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = notify_workers.smtp.port
    settings.EMAIL_USE_TLS = False
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    return notify_workers
