from django.urls import path

from events import api

urlpatterns = [
    path("events/", api.EventListView.as_view(), name="events"),
    path("events/<int:pk>/", api.EventDetailView.as_view(), name="event-detail"),
    path("events/<int:pk>/register/", api.RegisterView.as_view(), name="event-register"),
    path("events/<int:pk>/cancel/", api.CancelView.as_view(), name="event-cancel"),
    path("events/<int:pk>/vote/", api.VoteView.as_view(), name="event-vote"),
    path("me/tickets/", api.TicketListView.as_view(), name="me-tickets"),
]
