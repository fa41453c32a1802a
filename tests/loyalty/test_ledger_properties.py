"""Hypothesis drives random sequences of purchases, redemptions, refunds, expiries and
adjustments across two businesses and two customers; after every step the invariants hold:
no negative balance, balance = sum of entries = sum of lot remainders, and a customer's
bonuses never exceed what the circle granted them."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from loyalty import services
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory

amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("5000"), places=2)
small_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("300"), places=2)


class LedgerMachine(RuleBasedStateMachine):
    @initialize()
    def set_up(self):
        # Each example runs in a savepoint rolled back at teardown, at the same fixed time,
        # so examples neither see each other's rows nor depend on the wall clock.
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.clock = time_machine.travel(datetime(2026, 6, 1, 12, 0, tzinfo=UTC), tick=False)
        self.traveller = self.clock.start()
        self.businesses = [
            LoyaltyProgramFactory(
                business=BusinessFactory(), accrual_rate=Decimal("7.5"), hold_days=2, welcome_bonus=Decimal("50")
            ).business,
            LoyaltyProgramFactory(
                business=BusinessFactory(), accrual_rate=Decimal("3"), max_redeem_share=Decimal("80")
            ).business,
        ]
        self.customers = [UserFactory(), UserFactory()]
        self.purchases: list[tuple] = []  # (business, external_id)
        self.counter = 0

    def teardown(self):
        if hasattr(self, "clock"):
            self.clock.stop()
        if hasattr(self, "atomic"):
            transaction.set_rollback(True)
            self.atomic.__exit__(None, None, None)

    def next_id(self) -> str:
        self.counter += 1
        return f"h-{self.counter}"

    @rule(business=st.integers(0, 1), customer=st.integers(0, 1), amount=amounts, redeem_share=st.floats(0, 1))
    def purchase(self, business, customer, amount, redeem_share):
        business, customer = self.businesses[business], self.customers[customer]
        account = services.get_account(customer)
        most = services.max_redeemable(account=account, business=business, check_amount=amount)
        redeem = (most * Decimal(str(redeem_share))).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
        external_id = self.next_id()
        services.record_transaction(
            business=business, customer=customer, external_id=external_id, amount=amount, redeem=redeem
        )
        self.purchases.append((business, external_id))

    @rule(business=st.integers(0, 1), customer=st.integers(0, 1), amount=small_amounts)
    def greedy_purchase(self, business, customer, amount):
        """Asks for more bonuses than it may: refused, and nothing changes."""
        business, customer = self.businesses[business], self.customers[customer]
        before = services.get_account(customer).balance
        with pytest.raises((services.InsufficientBonuses, services.RedemptionOverLimit)):
            services.record_transaction(
                business=business, customer=customer, external_id=self.next_id(), amount=amount, redeem=amount
            )
        assert services.get_account(customer).balance == before

    @precondition(lambda self: self.purchases)
    @rule(pick=st.integers(0, 10_000), share=st.sampled_from(["all", "half", "kopeck"]))
    def refund(self, pick, share):
        business, external_id = self.purchases[pick % len(self.purchases)]
        purchase = Transaction.objects.get(business=business, external_id=external_id)
        left = purchase.gross_amount - purchase.refunded_amount
        if left <= 0:
            with pytest.raises(services.RefundNotPossible):
                services.refund_transaction(
                    business=business, external_id=external_id, refund_id=self.next_id(), amount=Decimal("0.01")
                )
            return
        if share == "all":
            services.refund_transaction(business=business, external_id=external_id)
        else:
            part = Decimal("0.01") if share == "kopeck" else max(Decimal("0.01"), (left / 2).quantize(Decimal("0.01")))
            services.refund_transaction(
                business=business, external_id=external_id, amount=min(part, left), refund_id=self.next_id()
            )

    @rule(customer=st.integers(0, 1), amount=st.decimals(min_value=Decimal("-200"), max_value=Decimal("200"), places=2))
    def adjust(self, customer, amount):
        if amount == 0:
            return
        customer = self.customers[customer]
        try:
            services.adjust_balance(user=customer, amount=amount, reason="hypothesis", created_by=None)
        except services.InsufficientBonuses:
            assert amount < 0 and -amount > services.get_account(customer).balance

    @rule(days=st.integers(1, 400))
    def time_passes_and_bonuses_expire(self, days):
        self.traveller.shift(timedelta(days=days))
        services.check_bonus_expiration()
        assert services.check_bonus_expiration() == []

    @rule()
    def tiers_are_recomputed(self):
        services.recompute_all_tiers()

    @invariant()
    def books_balance(self):
        if not hasattr(self, "customers"):
            return
        assert ledger_mismatches() == []
        for account in BonusAccount.objects.all():
            assert account.balance >= 0
            assert account.clawback_due >= 0
            granted = LedgerEntry.objects.filter(account=account, amount__gt=0).aggregate(s=Sum("amount"))["s"] or 0
            assert account.balance <= granted
        assert not BonusLot.objects.filter(remaining__lt=0).exists()


LedgerMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.django_db
def test_ledger_invariants_hold_under_random_operations(tiers):
    LedgerMachine.TestCase().runTest()
