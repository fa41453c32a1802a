"""The partner portal's pages, at /portal/. Each app's `portal.py` holds its views."""

urlpatterns: list = []
