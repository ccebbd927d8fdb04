"""URLs of the keys API, mounted under /api/v1/ (docs/api.md). Paths have no trailing
slash, exactly as documented."""

from django.urls import path

from . import views

urlpatterns = [
    path("accounts", views.AccountsView.as_view(), name="accounts"),
    path("accounts/<str:username>/keys", views.AccountKeysView.as_view(), name="account-keys"),
    path("accounts/<str:username>/bundles", views.BundlesView.as_view(), name="account-bundles"),
    path("session", views.SessionView.as_view(), name="session"),
    path("devices", views.DevicesView.as_view(), name="devices"),
    path("devices/self/prekeys", views.PreKeysView.as_view(), name="device-prekeys"),
    path(
        "devices/self/signed-prekey",
        views.SignedPreKeyView.as_view(),
        name="device-signed-prekey",
    ),
    path(
        "devices/self/last-resort-kem-prekey",
        views.LastResortKemPreKeyView.as_view(),
        name="device-last-resort-kem-prekey",
    ),
    path("devices/link-tokens", views.LinkTokensView.as_view(), name="link-tokens"),
    path("devices/<int:device_id>", views.DeviceView.as_view(), name="device"),
    path("provisioning", views.ProvisioningView.as_view(), name="provisioning"),
    # GET is an asynchronous long poll; PUT goes to a DRF view (views.provisioning_slot).
    path("provisioning/<str:address>", views.provisioning_slot, name="provisioning-slot"),
]
