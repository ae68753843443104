"""Operations: what lets an operator see and repair the flow. One health model (``health``, over
the readings in ``observations``) feeds ``messaging_status``, the Messaging page (``console``),
the alerts (``alerts``, mailed locally by ``alert_mail``) and ``/readyz`` (``http``); Prometheus
``metrics``; structured ``logs`` with event context and secrets scrubbed.
"""
