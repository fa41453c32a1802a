-- Each customer's first purchase at each partner (whatever became of it), kept by a
-- materialized view on purchases and ordered by partner: whether a partner's buyer is new
-- or returning without reading the partner's whole history. Merges keep the row with the
-- highest rank, the earliest time; queries read min(first_at), right before any merge too.
CREATE TABLE IF NOT EXISTS partner_firsts (
    partner_id UUID,
    customer_id UUID,
    first_at DateTime('UTC'),
    rank UInt32
) ENGINE = ReplacingMergeTree(rank)
ORDER BY (partner_id, customer_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS partner_firsts_feed TO partner_firsts AS
SELECT business_id AS partner_id, customer_id, min(occurred_at) AS first_at, bitNot(toUInt32(first_at)) AS rank
FROM purchases
GROUP BY business_id, customer_id;

-- What purchases held before the view existed.
INSERT INTO partner_firsts (partner_id, customer_id, first_at, rank)
SELECT business_id AS partner_id, customer_id, min(occurred_at) AS first_at, bitNot(toUInt32(first_at)) AS rank
FROM purchases
GROUP BY business_id, customer_id;
