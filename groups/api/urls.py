"""URLs of the groups API, mounted under /api/v1/ (docs/api.md, "Groups"). Paths have no
trailing slash, as the rest of the API."""

from django.urls import path

from . import views

urlpatterns = [
    path("groups", views.GroupsView.as_view(), name="groups"),
    path("groups/<str:group_id>", views.GroupView.as_view(), name="group"),
    path("groups/<str:group_id>/members", views.GroupMembersView.as_view(), name="group-members"),
    path(
        "groups/<str:group_id>/members/<str:username>",
        views.GroupMemberView.as_view(),
        name="group-member",
    ),
    path(
        "groups/<str:group_id>/admins/<str:username>",
        views.GroupAdminView.as_view(),
        name="group-admin",
    ),
]
