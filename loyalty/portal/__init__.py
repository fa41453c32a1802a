"""The partner portal's loyalty pages: the dashboard, program terms and their history,
customers, purchases and refunds, the cashier's page, manual adjustments and the
settlement report.

Each view runs under `accounts.portal.portal_view`, reads through `loyalty.selectors`
scoped by `request.business` (another business's objects are 404) and writes through
`loyalty.services`. Domain errors become form errors or messages.

Forms that write carry a hidden key made when the form is shown (the purchase's
`external_id`, the refund's `refund_id`, the adjustment's idempotency key), so a form sent
twice records once.
"""

from loyalty.portal.cashier import cashier
from loyalty.portal.customers import adjust, customer_detail, customers
from loyalty.portal.dashboard import dashboard
from loyalty.portal.program import program, program_update
from loyalty.portal.purchases import transaction_detail, transaction_refund, transactions
from loyalty.portal.settlement import settlement

__all__ = [
    "dashboard",
    "program",
    "program_update",
    "customers",
    "customer_detail",
    "adjust",
    "transactions",
    "transaction_detail",
    "transaction_refund",
    "cashier",
    "settlement",
]
