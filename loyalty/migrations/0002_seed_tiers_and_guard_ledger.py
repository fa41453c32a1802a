"""The four tiers of the circle, and the database's refusal to change or delete ledger entries.

The guard is a PostgreSQL trigger: an UPDATE or DELETE of a ledger row raises, whoever
sends it. TRUNCATE (used by test teardown and by nothing else) does not fire row triggers.
"""

from decimal import Decimal

from django.db import migrations

TIERS = [
    # name, spend over 365 days from, accrual uplift (pp), extra share of a check (pp)
    ("Bronze", Decimal("0"), Decimal("0"), Decimal("0")),
    ("Silver", Decimal("15000"), Decimal("1"), Decimal("5")),
    ("Gold", Decimal("50000"), Decimal("2"), Decimal("10")),
    ("Platinum", Decimal("150000"), Decimal("3"), Decimal("20")),
]

GUARD = """
CREATE OR REPLACE FUNCTION loyalty_ledger_entry_is_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'loyalty_ledgerentry is append-only: % refused', TG_OP
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER loyalty_ledger_entry_append_only
    BEFORE UPDATE OR DELETE ON loyalty_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION loyalty_ledger_entry_is_append_only();
"""

UNGUARD = """
DROP TRIGGER IF EXISTS loyalty_ledger_entry_append_only ON loyalty_ledgerentry;
DROP FUNCTION IF EXISTS loyalty_ledger_entry_is_append_only();
"""


def seed_tiers(apps, schema_editor):
    StatusTier = apps.get_model("loyalty", "StatusTier")
    for name, threshold, uplift, extra in TIERS:
        StatusTier.objects.get_or_create(
            name=name, defaults={"threshold": threshold, "accrual_uplift": uplift, "extra_redeem_share": extra}
        )


def guard_ledger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD, params=None)


def unguard_ledger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0001_initial")]

    operations = [
        migrations.RunPython(seed_tiers, migrations.RunPython.noop),
        migrations.RunPython(guard_ledger, unguard_ledger),
    ]
