"""API keys and roles against real PostgreSQL: 401s, 403s, hashing, revocation, the CLI."""

from __future__ import annotations

import argparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from api import cli
from api.auth import keys

# (method, path template, body, lowest role allowed); {site} is a site's id, {x} an asset's.
ENDPOINTS = [
    ("GET", "/api/v1/assets", None, "viewer"),
    ("GET", "/api/v1/assets/tree", None, "viewer"),
    ("GET", "/api/v1/assets/{site}", None, "viewer"),
    ("GET", "/api/v1/assets/{site}/tags", None, "viewer"),
    ("POST", "/api/v1/assets", {"name": "auth-new-{role}", "level": "site"}, "admin"),
    ("PATCH", "/api/v1/assets/{site}", {"display_name": "Auth plant"}, "admin"),
    ("DELETE", "/api/v1/assets/{x}", None, "admin"),
]
ROLES = ("viewer", "operator", "admin")


@pytest.fixture
def site(api_client: TestClient, role_headers: dict[str, dict[str, str]]) -> int:
    response = api_client.post(
        "/api/v1/assets", json={"name": "auth-site", "level": "site"}, headers=role_headers["admin"]
    )
    if response.status_code == 409:
        listed = api_client.get("/api/v1/assets?level=site", headers=role_headers["admin"])
        return next(a["id"] for a in listed.json() if a["name"] == "auth-site")
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _fill(path: str, **ids: object) -> str:
    return path.format(**ids)


@pytest.mark.parametrize(("method", "path", "body", "lowest"), ENDPOINTS)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_allowed_or_refused(
    api_client: TestClient,
    role_headers: dict[str, dict[str, str]],
    site: int,
    method: str,
    path: str,
    body: dict[str, str] | None,
    lowest: str,
    role: str,
) -> None:
    victim = api_client.post(
        "/api/v1/assets",
        json={"name": f"victim-{role}-{method}-{lowest}", "level": "area", "parent_id": site},
        headers=role_headers["admin"],
    ).json()["id"]
    json = {k: v.format(role=role) for k, v in body.items()} if body else None
    response = api_client.request(
        method, _fill(path, site=site, x=victim), json=json, headers=role_headers[role]
    )
    if keys.RANK[role] >= keys.RANK[lowest]:
        assert response.status_code < 400, response.text
    else:
        assert response.status_code == 403
        error = response.json()["error"]
        assert error["code"] == "forbidden" and lowest in error["message"]
    api_client.delete(f"/api/v1/assets/{victim}", headers=role_headers["admin"])


@pytest.mark.parametrize(("method", "path", "body", "lowest"), ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"X-API-Key": "lp_000000000000_" + "A" * 43},
        {"X-API-Key": ""},
    ],
    ids=["none", "garbage", "basic", "unknown", "empty"],
)
def test_no_valid_key_is_401(
    api_client: TestClient,
    site: int,
    method: str,
    path: str,
    body: dict[str, str] | None,
    lowest: str,
    headers: dict[str, str],
) -> None:
    response = api_client.request(
        method, _fill(path, site=site, x=site), json=body, headers=headers
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_x_api_key_header_works(api_client: TestClient, api_keys: dict[str, keys.NewKey]) -> None:
    response = api_client.get("/api/v1/assets", headers={"X-API-Key": api_keys["viewer"].secret})
    assert response.status_code == 200


def test_right_prefix_wrong_secret_is_401(
    api_client: TestClient, api_keys: dict[str, keys.NewKey]
) -> None:
    secret = api_keys["admin"].secret
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    response = api_client.get("/api/v1/assets", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_revoked_key_is_401_at_once(api_client: TestClient, db_session: Session) -> None:
    new = keys.create_key(db_session, name="short-lived", role="admin")
    headers = {"Authorization": f"Bearer {new.secret}"}
    assert api_client.get("/api/v1/assets", headers=headers).status_code == 200
    revoked = keys.revoke_key(db_session, new.key.prefix)
    assert revoked is not None and revoked.revoked_at is not None
    response = api_client.get("/api/v1/assets", headers=headers)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_database_never_holds_the_key(
    db_session: Session, api_keys: dict[str, keys.NewKey]
) -> None:
    secret = api_keys["viewer"].secret
    rows = db_session.execute(text("SELECT api_keys::text FROM api_keys")).scalars().all()
    assert rows and all(secret not in row and secret.split("_")[2] not in row for row in rows)
    stored = db_session.execute(
        text("SELECT hash FROM api_keys WHERE id = :id"), {"id": api_keys["viewer"].key.id}
    ).scalar_one()
    assert stored.startswith("pbkdf2_sha256$") and keys.verify_key(secret, stored)
    assert not keys.verify_key(secret + "x", stored)


def test_same_key_hashes_differently_each_time() -> None:
    secret, _prefix = keys.generate()
    first, second = keys.hash_key(secret, iterations=1000), keys.hash_key(secret, iterations=1000)
    assert first != second
    assert keys.verify_key(secret, first) and keys.verify_key(secret, second)
    assert not keys.verify_key(secret, "not$a$valid$hash") and not keys.verify_key(secret, "x")


def test_last_used_is_recorded(
    api_client: TestClient, db_session: Session, api_keys: dict[str, keys.NewKey]
) -> None:
    key = api_keys["operator"]
    api_client.get("/api/v1/assets", headers={"X-API-Key": key.secret})
    db_session.rollback()
    used = db_session.execute(
        text("SELECT last_used_at FROM api_keys WHERE id = :id"), {"id": key.key.id}
    ).scalar_one()
    assert used is not None


def test_bad_role_refused(db_session: Session) -> None:
    with pytest.raises(ValueError, match="not one of viewer, operator, admin"):
        keys.create_key(db_session, name="x", role="root")


def test_cli_create_list_revoke(
    api_client: TestClient, api_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"database_url": api_database_url}
    assert cli.keys_create(argparse.Namespace(name="cli-key", role="operator", **base)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    secret = printed[-1]
    assert keys.KEY_PATTERN.match(secret)
    assert api_client.get("/api/v1/assets", headers={"X-API-Key": secret}).status_code == 200

    assert cli.keys_list(argparse.Namespace(**base)) == 0
    listing = capsys.readouterr().out
    assert "cli-key" in listing and "operator" in listing and secret not in listing

    assert cli.keys_revoke(argparse.Namespace(key="cli-key", **base)) == 0
    assert api_client.get("/api/v1/assets", headers={"X-API-Key": secret}).status_code == 401
    assert cli.keys_revoke(argparse.Namespace(key="no-such-key", **base)) == 1
    assert cli.keys_create(argparse.Namespace(name="x", role="god", **base)) == 2
    assert "not one of" in capsys.readouterr().err
