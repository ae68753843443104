"""The shared kernel: what every app uses and no app owns.

Money formatting (``money``), billing-calendar arithmetic and ``billing_today()``
(``calendar``), one definition of a valid field (``fields``), admin building blocks
(``admin_tools``), Celery task option presets and the one backoff rule (``task_options``),
bulk inserts with COPY (``bulk``), the periodic-task machinery each app declares its
schedule with (``schedules``), and what operator commands share: progress, Ctrl-C, resume
hints (``commands``). It imports no other app of the project.
"""
