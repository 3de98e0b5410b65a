"""The admin only: /admin/login/ is the page the tests fetch."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
