"""The Loyalty service: purchases, the bonus ledger, tiers, redemption, refunds, expiry.

Every write locks the customer's `BonusAccount` row first (`_lock_account`), so all
changes to one customer's bonuses happen one after another; lots are then read and
changed under that lock. Retried writes are decided by unique keys: a purchase by
(business, external_id), a refund by (purchase, refund_id), a ledger entry by its
idempotency key.

The catalogue's functions keep their names: `calculate_bonus`, `update_status_tier`,
`apply_bonus_redemption`, `check_bonus_expiration`.
"""

# The package is split by use case; callers use `from loyalty import services` and these names.
from loyalty.services.adjustments import adjust_balance
from loyalty.services.birthdays import grant_birthday_bonuses
from loyalty.services.errors import (
    IdempotencyConflict,
    InsufficientBonuses,
    InvalidPurchase,
    RedemptionOverLimit,
    RefundIdRequired,
    RefundNotPossible,
    TransactionNotFound,
)
from loyalty.services.expiry import check_bonus_expiration, remind_expiring_bonuses
from loyalty.services.imports import BatchResult, ImportRow, import_purchases
from loyalty.services.ledger import (
    PROGRAM_FIELDS,
    accrual_rate,
    apply_bonus_redemption,
    calculate_bonus,
    get_account,
    get_program,
    max_redeemable,
    quote_redemption,
    redeem_share,
    return_bonus_redemption,
    spendable_balance,
    update_program,
)
from loyalty.services.purchases import PurchaseResult, record_transaction
from loyalty.services.refunds import RefundResult, refund_transaction
from loyalty.services.tiers import recompute_all_tiers, spend_over_year, update_status_tier

__all__ = [
    "InsufficientBonuses",
    "RedemptionOverLimit",
    "IdempotencyConflict",
    "InvalidPurchase",
    "TransactionNotFound",
    "RefundNotPossible",
    "RefundIdRequired",
    "get_account",
    "get_program",
    "PROGRAM_FIELDS",
    "update_program",
    "accrual_rate",
    "redeem_share",
    "calculate_bonus",
    "spendable_balance",
    "max_redeemable",
    "quote_redemption",
    "apply_bonus_redemption",
    "return_bonus_redemption",
    "spend_over_year",
    "update_status_tier",
    "recompute_all_tiers",
    "PurchaseResult",
    "record_transaction",
    "RefundResult",
    "refund_transaction",
    "adjust_balance",
    "ImportRow",
    "BatchResult",
    "import_purchases",
    "check_bonus_expiration",
    "remind_expiring_bonuses",
    "grant_birthday_bonuses",
]
