-- Registrations for partners' events, each with its event's host and terms: one row per
-- version (a registration checked in, cancelled or marked no-show, or its event moved,
-- finished or cancelled, is exported again with a higher version, the later updated_at of
-- the two in µs); queries read FINAL. The sorting key holds only what never changes (the
-- host, the event, the registration), and there is no partition by the event's start:
-- merges replace a row only within its key and its partition, and an event can be moved.
CREATE TABLE IF NOT EXISTS event_registrations (
    id UInt64,
    event_id UInt64,
    business_id UUID,
    customer_id UUID,
    status String,
    event_status String,
    event_starts_at DateTime('UTC'),
    event_ends_at DateTime('UTC'),
    registered_at DateTime('UTC'),
    checked_in_at Nullable(DateTime('UTC')),
    cancelled_at Nullable(DateTime('UTC')),
    paid_amount Decimal(18, 2),
    refunded_amount Decimal(18, 2),
    updated_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (business_id, event_id, id);
