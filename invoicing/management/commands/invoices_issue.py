from invoicing.management.commands._run import RunCommand


class Command(RunCommand):
    help = (
        "Run the daily invoice run now, in this process (for operators). Idempotent: periods already "
        "invoiced are skipped. Try invoices_preview first."
    )
    dry_run = False
