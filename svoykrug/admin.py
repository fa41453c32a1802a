"""Pieces the apps' Django admins share."""


class ReadOnlyAdminMixin:
    """Staff may look, never add, change or delete: these rows are written by services only."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
