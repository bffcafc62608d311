"""A real local SMTP server (Python 3.11's stdlib smtpd, on 127.0.0.1) that keeps the messages it
receives: the e-mail alerts' receiver. smtpd/asyncore are deprecated (gone in 3.12), still real
SMTP: the client side is the production code's smtplib."""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage


@contextmanager
def smtp_receiver():
    """Yields (host, port, received): the EmailMessages received (headers unfolded), in arrival order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import asyncore
        import smtpd

    received: list[EmailMessage] = []

    class Server(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kwargs):
            msg = message_from_bytes(data if isinstance(data, bytes) else data.encode(), policy=policy.default)
            msg["X-Envelope-To"] = ", ".join(rcpttos)
            received.append(msg)

    channels: dict = {}
    server = Server(("127.0.0.1", 0), None, decode_data=False, map=channels)
    port = server.socket.getsockname()[1]
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            asyncore.loop(timeout=0.1, count=1, map=channels)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", port, received
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
        for channel in list(channels.values()):
            channel.close()
