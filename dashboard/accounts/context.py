from django.http import HttpRequest

from dashboard.accounts.roles import Role, role_of


def roles(request: HttpRequest) -> dict[str, object]:
    role = role_of(request.user) if hasattr(request, "user") else None
    return {
        "user_role": role,
        "can_engineer": role is not None and role >= Role.ENGINEER,
        "can_lead": role is not None and role >= Role.LEAD,
        "can_admin": role is not None and role >= Role.ADMIN,
    }
