"""The Cross-Promo service: chains between partners, coupons, the win-win index, chain
recommendations.

The catalogue's functions keep their names: `create_chain`, `evaluate_chain_triggers`,
`calculate_winwin_index`, `generate_chain_recommendations`. loyalty calls in here from
the purchase path (coupons issued, claimed and voided inside the purchase's transaction);
nothing here writes to the loyalty ledger, except `reward_referrals`, a task that pays
referral bonuses later through loyalty's `adjust_balance` (see crosspromo.services.referrals)."""

from crosspromo.services.chains import (
    ChainConfig,
    ChainError,
    accept_chain,
    advance_chains,
    change_chain,
    create_chain,
    decline_chain,
    describe_reward,
    end_chain,
    pause_chain,
    resume_chain,
)
from crosspromo.services.coupons import (
    CouponClaim,
    CouponError,
    claim_coupon,
    evaluate_chain_triggers,
    expire_coupons,
    find_coupon,
    mark_redeemed,
    quote_coupon,
    void_coupons_for_refund,
)
from crosspromo.services.insights import (
    ChainSuggestion,
    WinWinIndex,
    calculate_winwin_index,
    generate_chain_recommendations,
)
from crosspromo.services.referrals import (
    ReferralSummary,
    UnknownReferralCode,
    find_referral_code,
    get_referral_code,
    note_referral_purchase,
    referral_summary,
    register_referral,
    reward_referrals,
)

__all__ = [
    "ChainConfig",
    "ChainSuggestion",
    "WinWinIndex",
    "calculate_winwin_index",
    "generate_chain_recommendations",
    "ChainError",
    "CouponClaim",
    "CouponError",
    "accept_chain",
    "advance_chains",
    "change_chain",
    "claim_coupon",
    "create_chain",
    "decline_chain",
    "describe_reward",
    "end_chain",
    "evaluate_chain_triggers",
    "expire_coupons",
    "find_coupon",
    "mark_redeemed",
    "pause_chain",
    "quote_coupon",
    "resume_chain",
    "void_coupons_for_refund",
    "ReferralSummary",
    "UnknownReferralCode",
    "find_referral_code",
    "get_referral_code",
    "note_referral_purchase",
    "referral_summary",
    "register_referral",
    "reward_referrals",
]
