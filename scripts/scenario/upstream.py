"""The upstream system of a scenario: creates agreements and changes them through the agreements
services, on time or late (held back past the daily run of the day they take effect), and logs
each change in a ``Plan`` for the oracle."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from . import faults
from .faults import LateEvents
from .oracle import Plan


class Upstream:
    """The agreements' owner: creates agreements and changes them, logging each change in a Plan."""

    def __init__(self, rng: random.Random, seed: int, late: LateEvents, report: Any) -> None:
        self.rng, self.seed, self.late, self.report = rng, seed, late, report
        self.plans: dict[str, Plan] = {}
        self.changes: Counter[str] = Counter()
        self.reserved: set[str] = set()  # kept for the late resume: no random change touches them

    def create(self, day: date, days: int) -> None:
        from agreements.services import AgreementInput, agreement_create

        rng, n = self.rng, len(self.plans)
        interval = rng.choice(["day", "day", "week", "month", "year"])
        count = rng.randint(1, 2) if interval != "year" else 1
        start = day + timedelta(days=rng.randint(0, 3))
        end = start + timedelta(days=rng.randint(10, days)) if rng.random() < 0.2 else None
        amount = rng.randint(100, 10_000)
        a = agreement_create(
            data=AgreementInput(
                external_ref=f"S{self.seed}-{n}",
                customer_name=(faults.HOSTILE_NAMES[n % len(faults.HOSTILE_NAMES)] + f" #{n}")[:200],
                customer_email="sim@example.com",
                description=faults.HOSTILE_DESCRIPTIONS[n % len(faults.HOSTILE_DESCRIPTIONS)],
                amount_minor=amount,
                currency=rng.choice(["EUR", "USD"]),
                interval=interval,
                interval_count=count,
                start_date=start,
                end_date=end,
                customer_ref=f"cus-{n}",
            )
        )
        self.plans[str(a.id)] = Plan(start, interval, count, end, prices=[(start, amount)])
        self.changes["agreement.created"] += 1

    def refuse_ten_kb_text(self, day: date) -> None:
        """A 10 kB name or description is refused with a field error and records nothing."""
        from django.core.exceptions import ValidationError

        from agreements.services import AgreementInput, agreement_create

        for field_name in ("customer_name", "description"):
            values = {"customer_name": "Sim", "description": "", field_name: faults.TEN_KB}
            try:
                agreement_create(
                    data=AgreementInput(
                        external_ref=f"S{self.seed}-10kb-{field_name}",
                        customer_email="sim@example.com",
                        amount_minor=100,
                        currency="EUR",
                        interval="day",
                        start_date=day,
                        **values,
                    )
                )
            except ValidationError as exc:
                if field_name not in exc.message_dict:
                    self.report.violations.append(f"10 kB {field_name}: refused without a field error: {exc}")
            else:
                self.report.violations.append(f"a 10 kB {field_name} was accepted")
        self.report.faults["hostile text in names and descriptions (10 kB refused)"] += 1

    def change(self, agreement_id: str, day: date, *, late: bool) -> None:
        """One random change (price, pause, resume, cancel) to the agreement, late or on time."""
        from agreements.models import Agreement
        from agreements.services import (
            agreement_cancel,
            agreement_change_price,
            agreement_pause,
            agreement_resume,
        )
        from core.calendar import next_period_start

        plan, rng = self.plans[agreement_id], self.rng
        a = Agreement.objects.get(pk=agreement_id)
        roll = rng.random()
        if agreement_id in self.reserved:
            return
        tomorrow = day + timedelta(days=1)
        nxt = next_period_start(plan.start, plan.interval, plan.count, day)
        if a.status == "active" and roll < 0.35:
            amount = rng.randint(100, 10_000)
            self._do(
                late, nxt, lambda: agreement_change_price(agreement_id=a.id, amount_minor=amount, today=day)
            )
            plan.prices.append((nxt, amount))
            self.changes["agreement.price_changed"] += 1
        elif a.status == "active" and roll < 0.55:
            self._do(late, tomorrow, lambda: agreement_pause(agreement_id=a.id, from_date=tomorrow))
            plan.pauses.append([tomorrow, None])
            self.changes["agreement.paused"] += 1
        elif a.status == "paused" and roll < 0.8:
            self._do(late, tomorrow, lambda: agreement_resume(agreement_id=a.id, from_date=tomorrow))
            plan.pauses[-1][1] = tomorrow
            self.changes["agreement.resumed"] += 1
        elif a.status in ("active", "paused") and roll > 0.95:
            at_end = rng.random() < 0.5
            a = self._do(
                late and at_end,
                nxt,
                lambda: agreement_cancel(agreement_id=a.id, at_period_end=at_end, today=day),
            )
            plan.cancel = a.cancel_effective_date
            self.changes["agreement.cancelled"] += 1

    def late_changes(self, day: date, step: int) -> None:
        """Each kind of late event at least once, on short-period agreements (so a run falls
        between the change and its delivery): a price change and a pause, then next day a
        resume and a cancel at period end."""
        from agreements.models import Agreement
        from agreements.services import (
            agreement_cancel,
            agreement_change_price,
            agreement_pause,
            agreement_resume,
        )
        from core.calendar import next_period_start

        short = [k for k, p in self.plans.items() if p.interval in ("day", "week") and p.start <= day]
        tomorrow = day + timedelta(days=1)
        active = [k for k in short if Agreement.objects.get(pk=k).status == "active"]
        if step == 0 and len(active) >= 2:
            priced, paused = active[0], active[1]
            plan = self.plans[priced]
            nxt = next_period_start(plan.start, plan.interval, plan.count, day)
            self.late.record(
                lambda: agreement_change_price(agreement_id=priced, amount_minor=4321, today=day),
                effective=nxt,
                days_later=3,  # its period is paid by then: a supplementary invoice or a credit note
            )
            plan.prices.append((nxt, 4321))
            self.late.record(
                lambda: agreement_pause(agreement_id=paused, from_date=tomorrow), effective=tomorrow
            )
            self.plans[paused].pauses.append([tomorrow, None])
            self.changes.update(["agreement.price_changed", "agreement.paused"])
            self.reserved.add(paused)  # tomorrow's late resume must find it still paused
        elif step == 1:
            paused = [k for k in short if Agreement.objects.get(pk=k).status == "paused"]
            paused.sort(key=lambda k: k not in self.reserved)  # the one paused late yesterday first
            if paused:
                resumed = paused[0]
                self.reserved.discard(resumed)
                self.late.record(
                    lambda: agreement_resume(agreement_id=resumed, from_date=tomorrow), effective=tomorrow
                )
                self.plans[resumed].pauses[-1][1] = tomorrow
                self.changes["agreement.resumed"] += 1
            active = [k for k in active if k not in paused]
            if active:
                ended, plan = active[-1], self.plans[active[-1]]
                a = self.late.record(
                    lambda: agreement_cancel(agreement_id=ended, at_period_end=True, today=day),
                    effective=next_period_start(plan.start, plan.interval, plan.count, day),
                    days_later=3,  # the ended periods are paid by then: credit notes and refunds
                )
                plan.cancel = a.cancel_effective_date
                self.changes["agreement.cancelled"] += 1

    def _do(self, late: bool, effective: date, change: Callable[[], Any]) -> Any:
        if not late:
            return change()
        return self.late.record(change, effective=effective, days_later=self.rng.choice((0, 0, 3, 10)))
