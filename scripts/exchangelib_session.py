#!/usr/bin/env python3
"""A scripted session of exchangelib (a mature third-party EWS client) against `taskbridge sim`.

create, get, update with change key, delete, push subscribe. See docs/SIMULATOR.md
("Third-party client") for how to run it. Exits non-zero on the first step that fails.

usage: scripts/exchangelib_session.py EWS_URL [--auth basic|ntlm]
  The simulator must have the users ann@example.com:ann-pw and svc@example.com:svc-pw (service).
"""
import argparse
import http.server
import queue
import sys
import threading

from exchangelib import (BASIC, NTLM, IMPERSONATION, Account, Configuration, Credentials,
                         Version, Build)
from exchangelib.items import Task
from exchangelib.version import EXCHANGE_2016
from decimal import Decimal

NOTIFICATIONS = queue.Queue()
OK_REPLY = b"""<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><soap:Body><m:SendNotificationResult><m:SubscriptionStatus>OK</m:SubscriptionStatus></m:SendNotificationResult></soap:Body></soap:Envelope>"""


class Listener(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        NOTIFICATIONS.put(body.decode("utf-8", "replace"))
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(OK_REPLY)))
        self.end_headers()
        self.wfile.write(OK_REPLY)

    def log_message(self, *args):
        pass


def step(name):
    print(f"==> {name}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--auth", choices=["basic", "ntlm"], default="basic")
    args = ap.parse_args()

    listener = http.server.HTTPServer(("127.0.0.1", 0), Listener)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    push_url = f"http://127.0.0.1:{listener.server_address[1]}/notify"

    user = "svc@example.com" if args.auth == "basic" else "EXAMPLE\\svc"
    config = Configuration(
        service_endpoint=args.url,
        credentials=Credentials(user, "svc-pw"),
        auth_type=BASIC if args.auth == "basic" else NTLM,
        version=Version(build=EXCHANGE_2016),
    )
    account = Account("ann@example.com", config=config, autodiscover=False,
                      access_type=IMPERSONATION)

    step("push subscribe on the Tasks folder")
    sub_id, watermark = account.tasks.subscribe_to_push(callback_url=push_url, status_frequency=1)
    print(f"    subscription {sub_id[:16]}..., watermark {watermark}")

    step("create a task")
    task = Task(folder=account.tasks, subject="exchangelib: review", status="InProgress", percent_complete=Decimal(10))
    task.save()
    print(f"    id {task.id[:20]}..., change key {task.changekey}")

    step("get it back")
    got = account.tasks.get(id=task.id)
    assert got.subject == "exchangelib: review", got.subject
    assert got.status == "InProgress", got.status
    print(f"    subject {got.subject!r}, status {got.status}, percent {got.percent_complete}")

    step("update with the change key (AutoResolve)")
    old_key = got.changekey
    got.percent_complete = Decimal(100)
    got.save(update_fields=["percent_complete"])
    assert got.changekey != old_key, "the change key must move"
    again = account.tasks.get(id=task.id)
    assert again.status == "Completed", again.status
    print(f"    new change key {again.changekey}, status {again.status}")

    step("the push notification arrived")
    body = NOTIFICATIONS.get(timeout=10)
    assert "CreatedEvent" in body or "ModifiedEvent" in body, body[:300]
    print("    SendNotification received")

    step("delete it")
    again.delete()
    assert not list(account.tasks.filter(subject="exchangelib: review")), "still there"
    print("    gone")
    listener.shutdown()
    print("exchangelib session: all steps passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report the failing step plainly
        print(f"FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
