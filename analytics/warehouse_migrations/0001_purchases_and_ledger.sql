-- Purchases: one row per version; a purchase changed later (a refund) comes again with a
-- higher version, and queries read the latest (FINAL, or argMax by version).
CREATE TABLE IF NOT EXISTS purchases (
    id UUID,
    business_id UUID,
    customer_id UUID,
    external_id String,
    source String,
    status String,
    occurred_at DateTime('UTC'),
    recorded_at DateTime('UTC'),
    gross_amount Decimal(18, 2),
    bonuses_redeemed Decimal(18, 2),
    coupon_discount Decimal(18, 2),
    paid_amount Decimal(18, 2),
    bonuses_accrued Decimal(18, 2),
    refunded_amount Decimal(18, 2),
    money_refunded Decimal(18, 2),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (business_id, occurred_at, id);

-- Ledger entries never change: exporting one twice leaves one row once merged (and
-- queries read FINAL). `issuer_id` is the business whose bonuses the entry's lot holds.
CREATE TABLE IF NOT EXISTS ledger_entries (
    id UInt64,
    customer_id UUID,
    business_id Nullable(UUID),
    issuer_id Nullable(UUID),
    transaction_id Nullable(UUID),
    kind String,
    amount Decimal(18, 2),
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY (customer_id, created_at, id);

-- The partners, for categories and names in reports.
CREATE TABLE IF NOT EXISTS businesses (
    id UUID,
    name String,
    category String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;
