"""Roles are Django groups. Each role includes the ones below it: a lead can do what an engineer
can, an engineer what a viewer can. Admins manage users and settings and hold every role."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, User
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django_htmx.middleware import HtmxDetails


class Role(IntEnum):
    VIEWER = 1
    ENGINEER = 2
    LEAD = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()


class Request(HttpRequest):
    """What a view behind :func:`role_required` is given: a logged-in user (Runway's users are
    Django's ``User``) and django-htmx's ``request.htmx`` (its middleware sets it)."""

    user: User
    htmx: HtmxDetails


# Each user's role is read once per request and kept on the user object.
_ROLE_CACHE = "_runway_role"


def role_of(user: AbstractBaseUser | AnonymousUser) -> Role | None:
    """The highest role a user holds, or None."""
    if not isinstance(user, User) or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Role.ADMIN
    if hasattr(user, _ROLE_CACHE):
        cached: Role | None = getattr(user, _ROLE_CACHE)
        return cached
    names = set(user.groups.values_list("name", flat=True))
    held = [role for role in Role if role.label in names]
    role = max(held) if held else None
    setattr(user, _ROLE_CACHE, role)
    return role


def has_role(user: AbstractBaseUser | AnonymousUser, needed: Role) -> bool:
    role = role_of(user)
    return role is not None and role >= needed


def users_with(needed: Role) -> QuerySet[User]:
    """The active users whose role is ``needed`` or higher, in one query (what :func:`role_of`
    says of each)."""
    held = [role.label for role in Role if role >= needed]
    return (
        User.objects.filter(is_active=True)
        .filter(Q(is_superuser=True) | Q(groups__name__in=held))
        .distinct()
    )


def role_required[R: HttpResponseBase](
    needed: Role,
) -> Callable[[Callable[..., R]], Callable[..., R | HttpResponse]]:
    """Log in first; then 403 unless the user holds ``needed`` (or a higher role).

    The 403 is answered here, not raised: it names the role needed and the role held, keeps the
    navigation, and logs one line without a traceback (``refusals.role_refusal``)."""

    def decorator(view: Callable[..., R]) -> Callable[..., R | HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> R | HttpResponse:
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, needed):
                from dashboard.accounts.refusals import role_refusal

                return role_refusal(request, needed)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def grant(user: User, role: Role) -> None:
    group, _ = Group.objects.get_or_create(name=role.label)
    user.groups.add(group)
    if role == Role.ADMIN:
        # Admins manage users and settings in Django's admin, which needs staff status.
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    if hasattr(user, _ROLE_CACHE):
        delattr(user, _ROLE_CACHE)
