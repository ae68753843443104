"""The one development and test support layer (not deployed): everything `make run`, the tests,
the benchmarks and the fault harness need to stand up local parts, in one place each.

- ``net``: free ports, "does it answer";
- ``waiting``: the one wait-until helper;
- ``database``: PostgreSQL for local use: "does it answer", one database per purpose (created or
  recreated the same way everywhere), the embedded server from the pgserver wheel;
- ``endpoint``: the local SNS/SQS endpoint, moto or ministack, started, stopped and restarted the
  same way everywhere (``ministack`` runs that emulator from its own virtualenv);
- ``sandbox_gateway``: the payment gateway sandbox (a Stripe-like HTTP service on loopback);
- ``backlog``: an outbox backlog of any size in one SQL statement (operations behind it);
- ``stack``, ``supervisor``, ``running``: `make run`'s parts and how it starts them, its children
  (their output, their ordered warm stop), and the file `make manage` finds the running stack by.
"""
