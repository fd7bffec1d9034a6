import os

from django.shortcuts import render
from django.urls import path


def index(request):
    return render(request, "index.html", {"dyno": os.environ.get("DYNO", "?")})


urlpatterns = [path("", index)]
