"""Browser tests of the partner portal: a real headless Chromium, driven by Playwright, against
pytest-django's `live_server` (a server thread of the test process, on a transactional test
database), the portal in English (the msgids).

Run them:

    .venv/bin/python -m pytest tests/e2e            # or `-m e2e` anywhere; `-m "not e2e"` leaves them out

The browser is Debian's `chromium` (`apt-get install chromium`), at /usr/bin/chromium or where
E2E_CHROMIUM points; Playwright's own browser downloads are not used (`playwright install` is
not needed). Without that browser, or without the `playwright` package, the tests skip, and
fail instead under REQUIRE_SERVICES=1 (CI).

Every page a test visits is saved full page as `var/e2e/<test name>/NN-<page>.png` (the folder
is emptied when the test starts; a failing test adds `NN-failure.png` of where it stopped).

One browser serves the whole package and each test gets a fresh context (cookies, storage).
While Playwright's sync API runs, an asyncio loop is running in the test's thread, which makes
Django refuse ORM calls there (SynchronousOnlyOperation); the browser fixture therefore sets
DJANGO_ALLOW_ASYNC_UNSAFE for exactly the browser's lifetime — the ORM runs in this thread only,
never inside the loop — and closes the browser with the package, so later tests run without it.
"""

import contextlib
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import pytest
from django.conf import settings

from tests.conftest import _missing

CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "e2e"
TIMEOUT_MS = 15_000  # what an action or an `expect` waits at most; pages answer in milliseconds


try:  # the test modules take `expect` from here, so that they import without the package too
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "the browser tests need the playwright package: make install-dev"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"the browser tests need Chromium at {CHROMIUM}: apt-get install chromium, or set E2E_CHROMIUM"
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """An `e2e` test skips without the browser (fails under REQUIRE_SERVICES=1), before any
    fixture is set up: the test database is not made for a test that cannot run."""
    if item.get_closest_marker("e2e") and (reason := browser_missing()):
        _missing(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """The outcome of each phase on the item, for the shot fixture's screenshot of a failure."""
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


# --- The browser ------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the package's tests."""
    if reason := browser_missing():  # a test not marked e2e that asks for the browser
        _missing(reason)
    expect.set_options(timeout=TIMEOUT_MS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            yield chromium
            chromium.close()


@pytest.fixture
def context(browser, live_server):
    """A fresh browser profile per test, speaking English to the live server."""
    fresh = browser.new_context(
        base_url=live_server.url,
        locale="en-US",
        extra_http_headers={"Accept-Language": "en"},
        viewport={"width": 1280, "height": 900},
    )
    fresh.set_default_timeout(TIMEOUT_MS)
    yield fresh
    fresh.close()


class Screenshots:
    """`shot("dashboard")` saves the page, full, as the test's next NN-dashboard.png."""

    def __init__(self, page, folder: Path):
        self.page = page
        self.folder = folder
        self.count = 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def __call__(self, name: str) -> Path:
        self.count += 1
        path = self.folder / f"{self.count:02d}-{re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def page(context):
    fresh = context.new_page()
    yield fresh
    fresh.close()


@pytest.fixture
def shot(page, request) -> Callable[[str], Path]:
    """Save the page as the test's next screenshot: `shot("dashboard")`."""
    shots = Screenshots(page, SCREENSHOTS / re.sub(r"[^\w.-]+", "_", request.node.name))
    yield shots
    report = getattr(request.node, "e2e_report_call", None)
    if report is not None and report.failed and not page.is_closed():
        with contextlib.suppress(Exception):  # the page may have gone with the failure; the report says what
            shots("failure")


# --- The people and businesses ----------------------------------------------------------------


# The partners and their staff are the portal tests' own (tests/portal/conftest.py).
from tests.portal.conftest import business_a, business_b, cashier, owner, owner_b  # noqa: E402, F401

# --- Logging in through the forms -------------------------------------------------------------


@pytest.fixture
def log_in(page, sms, shot):
    """Log a member in as a person would: the phone, then the code from the (recorded) SMS.
    Ends on the portal's home page, or on `next` (a portal path) when given: an owner's home
    page reads the warehouse, which only the dashboard's test sets up."""

    def do_log_in(user, *, next: str | None = None):
        page.goto(f"/portal/login/?{urlencode({'next': next})}" if next else "/portal/login/")
        expect(page.get_by_role("heading", name="Partner portal")).to_be_visible()
        page.get_by_label("Phone number").fill(user.phone)
        shot("login-phone")
        page.get_by_role("button", name="Get a code").click()
        expect(page.get_by_role("heading", name="Enter the code")).to_be_visible()
        assert sms.sent[-1][0] == user.phone
        page.get_by_label("Code from the SMS").fill(sms.last_code())
        shot("login-code")
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(re.compile(re.escape(next or "/portal/") + "$"))
        expect(page.locator(".topbar .who")).to_have_text(user.get_short_name())

    return do_log_in
