-- Each customer's first purchase in the circle and where it was (their home partner),
-- kept up to date by a materialized view on purchases: the dashboard's "customers of other
-- partners" without reading every purchase of the circle. The state is argMin of the
-- partner by (occurred_at, recorded_at) packed into one number; merging states is a min, so
-- a purchase exported twice or in a later version changes nothing.
CREATE TABLE IF NOT EXISTS customer_firsts (
    customer_id UUID,
    home AggregateFunction(argMin, UUID, UInt64)
) ENGINE = AggregatingMergeTree()
ORDER BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_firsts_feed TO customer_firsts AS
SELECT customer_id, argMinState(business_id, toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at)) AS home
FROM purchases
GROUP BY customer_id;

-- What purchases held before the view existed.
INSERT INTO customer_firsts (customer_id, home)
SELECT customer_id, argMinState(business_id, toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at))
FROM purchases
GROUP BY customer_id;
