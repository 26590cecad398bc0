"""Roles are Django groups. Each role includes the ones below it: a lead can do what an engineer
can, an engineer what a viewer can. Admins manage users and settings and hold every role."""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from functools import wraps
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.http import HttpRequest, HttpResponse


class Role(IntEnum):
    VIEWER = 1
    ENGINEER = 2
    LEAD = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()


def role_of(user: AbstractBaseUser | AnonymousUser) -> Role | None:
    """The highest role a user holds, or None."""
    if not user.is_authenticated or not user.is_active:
        return None
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    cached = getattr(user, "_runway_role", False)
    if cached is not False:
        return cached
    names = set(user.groups.values_list("name", flat=True))  # type: ignore[union-attr]
    held = [role for role in Role if role.label in names]
    role = max(held) if held else None
    user._runway_role = role  # type: ignore[union-attr]
    return role


def has_role(user: AbstractBaseUser | AnonymousUser, needed: Role) -> bool:
    role = role_of(user)
    return role is not None and role >= needed


def role_required(
    needed: Role,
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Log in first; then 403 unless the user holds ``needed`` (or a higher role).

    The 403 is answered here, not raised: it names the role needed and the role held, keeps the
    navigation, and logs one line without a traceback (``refusals.role_refusal``)."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                from django.contrib.auth.views import redirect_to_login

                return redirect_to_login(request.get_full_path())
            if not has_role(request.user, needed):
                from dashboard.accounts.refusals import role_refusal

                return role_refusal(request, needed)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def grant(user: AbstractBaseUser, role: Role) -> None:
    group, _ = Group.objects.get_or_create(name=role.label)
    user.groups.add(group)  # type: ignore[attr-defined]
    if role == Role.ADMIN:
        # Admins manage users and settings in Django's admin, which needs staff status.
        user.is_staff = user.is_superuser = True  # type: ignore[attr-defined]
        user.save(update_fields=["is_staff", "is_superuser"])
    if hasattr(user, "_runway_role"):
        del user._runway_role
