"""Create every SNS topic, SQS queue, DLQ and subscription the project needs."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from events import topology
from events.topology.provisioning import CREATE, UPDATE, provision, provision_alarms, summarize


class Command(BaseCommand):
    help = (
        "Create (idempotently) the SNS topics, SQS queues with their dead-letter queues, "
        "and SNS->SQS subscriptions described in events/topology.py. Safe to run on every deploy. "
        "Prints what it changes (and, with -v 2 or --dry-run, what it found unchanged)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Print the plan; change nothing.")
        parser.add_argument(
            "--alarms",
            action="store_true",
            help="Also create CloudWatch alarms (DLQ not empty, oldest message too old) -> alerts topic.",
        )

    def handle(self, *args: Any, dry_run: bool = False, alarms: bool = False, **options: Any) -> None:
        where = settings.AWS_ENDPOINT_URL or f"AWS region {settings.AWS_REGION}"
        self.stdout.write(
            f"{'Plan for' if dry_run else 'Provisioning'} {where}, prefix {settings.RESOURCE_PREFIX!r}"
        )
        try:
            topo = topology.build()
            changes = provision(topo, dry_run=dry_run)
            if alarms:
                changes += provision_alarms(topo, dry_run=dry_run)
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(
                f"Could not reach SNS/SQS at {where}: {exc}. Check AWS_ENDPOINT_URL (local) "
                "or your AWS credentials and AWS_REGION (real AWS)."
            ) from exc
        for change in changes:
            if change.action in (CREATE, UPDATE):
                self.stdout.write(self.style.SUCCESS(str(change)))
            elif dry_run or options["verbosity"] >= 2:  # unchanged: part of a plan, or asked for
                self.stdout.write(str(change))
        if not settings.AWS_ENDPOINT_URL and not settings.OPERATOR_PRINCIPAL_ARNS:
            self.stdout.write(
                self.style.WARNING(
                    "Note: OPERATOR_PRINCIPAL_ARNS is empty, so consumer queues accept messages from "
                    "their SNS topics only: events_replay --to-queue and dlq_redrive will be refused."
                )
            )
        self.stdout.write(("Dry run: " if dry_run else "Done: ") + summarize(changes))
