"""The web client's pages, mounted at the root. Paths have no trailing slash, like the API."""

from django.urls import path

from . import views

app_name = "web"

urlpatterns = [
    path("", views.home, name="home"),
    path("signup", views.signup, name="signup"),
    path("login", views.login, name="login"),
    path("chat", views.chat, name="chat"),
    path("security", views.security, name="security"),
    path("privacy", views.privacy, name="privacy"),
]
