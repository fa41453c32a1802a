"""The demo circle's cross-promo: chains in every status, coupons issued and redeemed."""

import pytest
from django.core.management import call_command
from django.utils import timezone

from crosspromo.models import Coupon, CrossPromoChain
from tests.loyalty.test_demo import SMALL

pytestmark = pytest.mark.django_db


def test_seed_demo_makes_chains_in_every_status_with_coupons(settings, tiers):
    settings.DEBUG = True
    started = timezone.now()
    call_command("seed_demo", **SMALL)
    statuses = set(CrossPromoChain.objects.values_list("status", flat=True))
    assert statuses == set(CrossPromoChain.Status.values)
    assert Coupon.objects.filter(status=Coupon.Status.REDEEMED).exists()
    assert Coupon.objects.filter(status=Coupon.Status.ACTIVE).exists()
    # Issued by their purchases when those happened, redeemed later but before today.
    for coupon in Coupon.objects.select_related("chain", "issuing_transaction", "redeeming_transaction"):
        assert coupon.issued_at == coupon.issuing_transaction.occurred_at
        assert coupon.chain.created_at <= coupon.issued_at < started
        if coupon.status == Coupon.Status.REDEEMED:
            assert coupon.issued_at < coupon.redeemed_at == coupon.redeeming_transaction.occurred_at < started
    counts = (CrossPromoChain.objects.count(), Coupon.objects.count())
    call_command("seed_demo", **SMALL)
    assert (CrossPromoChain.objects.count(), Coupon.objects.count()) == counts
