-- Cross-promo coupons: one row per version (a coupon redeemed, expired or voided later is
-- exported again with a higher version, its updated_at in µs); queries read FINAL. Ordered
-- by the partner that honours them, the target, whose dashboard counts them most.
CREATE TABLE IF NOT EXISTS coupons (
    id UInt64,
    chain_id UInt64,
    source_id UUID,
    target_id UUID,
    customer_id UUID,
    status String,
    issued_at DateTime('UTC'),
    expires_at DateTime('UTC'),
    redeemed_at Nullable(DateTime('UTC')),
    issuing_transaction_id UUID,
    redeeming_transaction_id Nullable(UUID),
    value_given Decimal(18, 2),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(issued_at)
ORDER BY (target_id, issued_at, id);
