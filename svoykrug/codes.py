"""Short codes people read, type and scan: coupon codes, door tickets.

One alphabet without look-alikes (no 0/O, 1/I/L, 2/Z, 5/S, 8/B), drawn with `secrets`; a
code as typed or scanned is read the same whatever its case, spaces, dashes or QR prefix."""

import secrets

CODE_ALPHABET = "34679ACDEFGHJKMNPQRTUVWXY"


def random_code(length: int) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def normalize_code(text: str, *, qr_prefix: str) -> str:
    code = (text or "").strip().upper()
    if code.startswith(qr_prefix):
        code = code[len(qr_prefix) :]
    # No code holds a NUL byte (and PostgreSQL refuses to compare with one): drop it.
    return code.replace(" ", "").replace("-", "").replace("\x00", "")
