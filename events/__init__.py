"""The event backbone every context shares: how domain events are recorded, published, consumed,
routed and watched. Apps never import each other; they share this and the event contracts.

- ``contracts``, ``envelope``, ``signing``: the language (event types and their data schemas, the
  envelope and its limits, the signature that makes an event authentic);
- ``publishing``: recording events with the domain change (outbox), the relay to SNS, the event
  store, replays and the events API;
- ``consuming``: the handler registry, the consumer runtime, push and pull mode, the DLQ tools;
- ``topology``: the declared topics and queues, provisioning and queue policies, the AWS clients;
- ``operations``: the one health model, alerts and their e-mail, metrics, logs, the Messaging page
  and the HTTP probes.
"""
