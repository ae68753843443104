from invoicing.management.commands._run import RunCommand


class Command(RunCommand):
    help = (
        "The daily run as a dry run: how many invoices, totals per currency, flagged agreements. "
        "Writes nothing."
    )
    dry_run = True
