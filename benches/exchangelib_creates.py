#!/usr/bin/env python3
"""The comparison client of `cargo xtask bench`: exchangelib creates the same tasks as `taskbridge
publish` does, against the same simulator, so that the two clients' costs can be set side by side.

For each of M mailboxes, impersonated by the service account, it creates that mailbox's share of A
tasks in the Tasks folder with `Account.bulk_create` at exchangelib's default chunk size (100 items
per CreateItem), carrying the fields taskbridge writes: Subject, Body, Importance, StartDate,
DueDate, TotalWork, ActualWork, PercentComplete, Categories and the two extended properties that
tag a taskbridge item (assignment key and project). Mailboxes are worked on one after the other,
as a plain exchangelib program does.

Prints one JSON object on stdout:
  created, failed   items created / refused
  wall_s            wall time of the create loop (accounts, folder lookups and creates)
  cpu_s             CPU time of this process in that loop (time.process_time), so the interpreter
                    start and `import exchangelib` are left out: the figure favours exchangelib
  import_cpu_s      CPU time spent importing exchangelib, for reference
  chunk_size        items per CreateItem

usage: benches/exchangelib_creates.py EWS_URL --user SVC --password PW --mailbox SMTP [--mailbox ...]
                                      --tasks A [--mailboxes-file FILE]
Install: pip install exchangelib (5.6.0 tested). Nothing of exchangelib is part of taskbridge.
"""
import argparse
import json
import sys
import time

_t0 = time.process_time()
from decimal import Decimal  # noqa: E402

from exchangelib import (BASIC, IMPERSONATION, Account, Configuration, Credentials,  # noqa: E402
                         EWSDate, ExtendedProperty, Version)
from exchangelib.items import Task  # noqa: E402
from exchangelib.services.common import EWSService  # noqa: E402
from exchangelib.version import EXCHANGE_2016  # noqa: E402

IMPORT_CPU = time.process_time() - _t0

PROPERTY_SET = "c11ff724-aa03-4555-9952-8fa248a11c3e"
PROJECT = "5b0c7f3e-2d1a-4c55-8e7b-0a9d3c2b1e47"


class TaskbridgeKey(ExtendedProperty):
    property_set_id = PROPERTY_SET
    property_name = "taskbridge-key"
    property_type = "String"


class TaskbridgeProject(ExtendedProperty):
    property_set_id = PROPERTY_SET
    property_name = "taskbridge-project"
    property_type = "String"


Task.register("tb_key", TaskbridgeKey)
Task.register("tb_project", TaskbridgeProject)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--mailbox", action="append", default=[])
    ap.add_argument("--mailboxes-file", help="one SMTP address per line")
    ap.add_argument("--tasks", type=int, required=True, help="tasks in all, spread round-robin")
    args = ap.parse_args()
    mailboxes = list(args.mailbox)
    if args.mailboxes_file:
        with open(args.mailboxes_file, encoding="utf-8") as f:
            mailboxes += [line.strip() for line in f if line.strip()]
    if not mailboxes:
        ap.error("no mailbox given")

    config = Configuration(
        service_endpoint=args.url,
        credentials=Credentials(args.user, args.password),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
    )
    # Tasks carry dates (exchangelib's EWSDate), as taskbridge writes them.
    start = EWSDate(2026, 3, 2)
    due = EWSDate(2026, 3, 3)
    # Round-robin, as the bench's project assigns task i to mailbox i % M.
    per_mailbox = [[] for _ in mailboxes]
    for i in range(args.tasks):
        per_mailbox[i % len(mailboxes)].append(i + 1)

    created = failed = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for smtp, uids in zip(mailboxes, per_mailbox):
        if not uids:
            continue
        account = Account(smtp, config=config, autodiscover=False, access_type=IMPERSONATION)
        folder = account.tasks
        items = [
            Task(
                folder=folder,
                subject=f"Bench: Task {uid}",
                body=f"Notes of task {uid}: check the drawings, then report.",
                importance="Normal",
                start_date=start,
                due_date=due,
                total_work=960,
                actual_work=0,
                percent_complete=Decimal(0),
                categories=["Bench"],
                tb_key=f"{PROJECT}:{uid}",
                tb_project=PROJECT,
            )
            for uid in uids
        ]
        for result in account.bulk_create(folder=folder, items=items):
            if isinstance(result, Exception):
                failed += 1
            else:
                created += 1
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    print(json.dumps({
        "created": created,
        "failed": failed,
        "wall_s": wall,
        "cpu_s": cpu,
        "import_cpu_s": IMPORT_CPU,
        "chunk_size": EWSService.CHUNK_SIZE,
    }))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one plain line for the bench to show
        print(f"exchangelib bench failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
