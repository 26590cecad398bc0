from django.urls import reverse

from dashboard.accounts.roles import Role, has_role, role_of
from dashboard.audit.models import AuditEvent


def test_a_lead_logs_in_and_it_is_audited(client, lead):
    response = client.post(reverse("login"), {"username": "leo", "password": "pw-leo"})
    assert response.status_code == 302 and response["Location"] == reverse("overview")
    assert AuditEvent.objects.filter(action="user.logged_in", actor_name="leo").exists()


def test_a_wrong_password_is_refused_and_audited_without_the_password(client, lead):
    response = client.post(reverse("login"), {"username": "leo", "password": "guess"})
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()
    event = AuditEvent.objects.get(action="user.login_failed")
    assert event.details == {"username": "leo", "address": "127.0.0.1", "count": 1}
    assert "guess" not in str(event.details)


def test_log_out_is_a_post_and_is_audited(client, lead):
    client.force_login(lead)
    assert client.post(reverse("logout")).status_code == 302
    assert AuditEvent.objects.filter(action="user.logged_out", actor_name="leo").exists()


def test_roles_include_the_ones_below(viewer, engineer, lead, admin_user, outsider):
    assert role_of(outsider) is None and not has_role(outsider, Role.VIEWER)
    assert has_role(viewer, Role.VIEWER) and not has_role(viewer, Role.ENGINEER)
    assert has_role(engineer, Role.ENGINEER) and not has_role(engineer, Role.LEAD)
    assert has_role(lead, Role.ENGINEER) and has_role(lead, Role.LEAD)
    assert role_of(admin_user) == Role.ADMIN


def test_an_inactive_user_has_no_role(lead):
    lead.is_active = False
    assert role_of(lead) is None
