-- One partner's bonus movements, ordered for its dashboard. ledger_entries is ordered by
-- customer; a partner's entries are spread over all of it. Here each entry is kept under
-- the partner whose lot it moves (role 'issuer') and under the partner where it happened
-- (role 'place'), so one partner's rows are one range of the sorting key. Materialized
-- views fill it from every insert into ledger_entries; an entry exported again replaces
-- itself here as it does there (same id and version), and queries read FINAL.
CREATE TABLE IF NOT EXISTS business_ledger (
    partner_id UUID,
    role String,
    id UInt64,
    kind String,
    amount Decimal(18, 2),
    created_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(created_at)
ORDER BY (partner_id, role, created_at, id);

CREATE MATERIALIZED VIEW IF NOT EXISTS business_ledger_by_issuer TO business_ledger AS
SELECT assumeNotNull(issuer_id) AS partner_id, 'issuer' AS role, id, kind, amount, created_at, version
FROM ledger_entries
WHERE isNotNull(issuer_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS business_ledger_by_place TO business_ledger AS
SELECT assumeNotNull(business_id) AS partner_id, 'place' AS role, id, kind, amount, created_at, version
FROM ledger_entries
WHERE isNotNull(business_id);

-- What ledger_entries held before the views existed (twice is harmless: rows replace themselves).
INSERT INTO business_ledger (partner_id, role, id, kind, amount, created_at, version)
SELECT assumeNotNull(issuer_id), 'issuer', id, kind, amount, created_at, version
FROM ledger_entries
WHERE isNotNull(issuer_id);

INSERT INTO business_ledger (partner_id, role, id, kind, amount, created_at, version)
SELECT assumeNotNull(business_id), 'place', id, kind, amount, created_at, version
FROM ledger_entries
WHERE isNotNull(business_id);
