-- Each customer's first purchase in the circle and where it was (their home partner), kept
-- up to date by a materialized view on purchases: the dashboard's "customers of other
-- partners" without reading every purchase of the circle. first_key packs the purchase's
-- (occurred_at, recorded_at) into one number. A customer has a row from every insert that
-- held one of their purchases; merges keep the one with the highest rank, the earliest
-- first_key, and queries read argMin(home, first_key), right before any merge too. A
-- purchase exported twice or in a later version changes nothing. Plain columns, not
-- aggregate states: a lookup of 15,000 customers reads them in 40 ms rather than 100. No
-- subquery in the view: ClickHouse 18.16 feeds only a view's outer FROM.
CREATE TABLE IF NOT EXISTS customer_firsts (
    customer_id UUID,
    first_key UInt64,
    home UUID,
    rank UInt64
) ENGINE = ReplacingMergeTree(rank)
ORDER BY customer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS customer_firsts_feed TO customer_firsts AS
SELECT customer_id,
       min(toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at)) AS first_key,
       argMin(business_id, toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at)) AS home,
       bitNot(first_key) AS rank
FROM purchases
GROUP BY customer_id;

-- What purchases held before the view existed.
INSERT INTO customer_firsts (customer_id, first_key, home, rank)
SELECT customer_id,
       min(toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at)) AS first_key,
       argMin(business_id, toUInt64(occurred_at) * 4294967296 + toUInt64(recorded_at)) AS home,
       bitNot(first_key) AS rank
FROM purchases
GROUP BY customer_id;
