"""Use cases of the payments context, one module per concept:

- ``opening``: one payment per issued invoice (one at a time or a batch), due at once;
- ``dispatching``: the due charges leased and sent in batches (a kicked pass, the sweep);
- ``charging``: a charge started (its rate-limit token, its payment claimed) and sent;
- ``answers``: the gateway's answer recorded with its consequence (dunning, backoff, refunds);
- ``charge_lists``: a charge alone, or a message's list of them, several at the gateway at once;
- ``gateway_threads``: a worker process's threads for gateway calls, and a slot for each;
- ``retries``: the sweep that takes charges up again, and an operator's "retry now";
- ``closing``: an invoice voided (stop collecting) or credited (give money back);
- ``refunds``: refunds through the gateway, once per cause.
"""

from .charge_lists import charges_run, payment_charge
from .closing import payment_close_for_invoice, refund_for_credit_note
from .dispatching import charges_dispatch, charges_send_on
from .opening import payment_create_for_invoice, payments_create_for_invoices
from .refunds import payment_refund, refund_retry_now, refunds_retry_due
from .retries import payment_retry_now, payments_retry_due

__all__ = [
    "charges_dispatch",
    "charges_run",
    "charges_send_on",
    "payment_charge",
    "payment_close_for_invoice",
    "payment_create_for_invoice",
    "payment_refund",
    "payment_retry_now",
    "payments_create_for_invoices",
    "payments_retry_due",
    "refund_for_credit_note",
    "refund_retry_now",
    "refunds_retry_due",
]
