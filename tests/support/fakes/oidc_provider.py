"""A fake OpenID Connect identity provider on 127.0.0.1, speaking the protocol over HTTP:
discovery, JWKS (RSA keys made with `cryptography`), an authorization endpoint that "signs in"
whoever the test says and redirects back with a code, a token endpoint that checks client
authentication, the redirect URI and the PKCE verifier (S256) and answers with an RS256
id_token, and a userinfo endpoint.

Knobs for the attack tests: `claims_hook` rewrites the id_token's claims before signing,
`sign_with_unpublished_key` signs with a key the JWKS does not list, `unsigned` sends alg none, `rotate()` publishes a new
key and signs with it from then on, `email_in_id_token=False` leaves the email to userinfo.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_ID = "parley-test-client"
CLIENT_SECRET = "parley-test-secret"


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


class _Key:
    def __init__(self, kid: str):
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        numbers = self.private.public_key().public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}


class FakeIdentityProvider:
    def __init__(self):
        self.issuer = ""
        self.keys = [_Key("k1")]
        self.unpublished = _Key("rogue")
        self.user: dict = {"sub": "user-1", "email": "person@example.test", "email_verified": True, "name": "Pat Person"}
        self.claims_hook: Callable[[dict], dict] | None = None
        self.sign_with_unpublished_key = False
        self.unsigned = False  # alg "none"
        self.email_in_id_token = True
        self.codes: dict[str, dict] = {}
        self.token_requests: list[dict] = []
        self.jwks_fetches = 0
        self._runner: web.AppRunner | None = None

    # -- control -----------------------------------------------------------------------------
    def rotate(self) -> None:
        """Publish a new key and sign with it from now on (the old one stays listed)."""
        self.keys.append(_Key(f"k{len(self.keys) + 1}"))

    def config(self, provider_id: str = "test", label: str = "Test IdP") -> dict:
        """The entry for Settings.extra["oidc_providers"]."""
        return {"id": provider_id, "label": label, "issuer": self.issuer,
                "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}

    # -- endpoints ---------------------------------------------------------------------------
    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.issuer,
            "authorization_endpoint": self.issuer + "/authorize",
            "token_endpoint": self.issuer + "/token",
            "userinfo_endpoint": self.issuer + "/userinfo",
            "jwks_uri": self.issuer + "/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
        })

    async def jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        return web.json_response({"keys": [k.jwk() for k in self.keys]})

    async def authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("response_type") != "code" or q.get("client_id") != CLIENT_ID:
            return web.json_response({"error": "unauthorized_client"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request", "error_description": "PKCE required"}, status=400)
        code = secrets.token_urlsafe(16)
        self.codes[code] = {"challenge": q["code_challenge"], "nonce": q.get("nonce"),
                            "redirect_uri": q["redirect_uri"], "user": dict(self.user)}
        location = q["redirect_uri"] + "?" + urlencode({"code": code, "state": q.get("state", "")})
        raise web.HTTPFound(location)

    async def token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append(form)
        auth = request.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if auth != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code", "")), None)  # a code works once
        if grant is None or form.get("grant_type") != "authorization_code":
            return web.json_response({"error": "invalid_grant"}, status=400)
        if form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant", "error_description": "redirect_uri"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if not verifier or challenge != grant["challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE verifier"}, status=400)
        user = grant["user"]
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user["sub"], "aud": CLIENT_ID, "iat": now, "exp": now + 300,
                  "nonce": grant["nonce"], "name": user.get("name")}
        if self.email_in_id_token:
            claims.update(email=user.get("email"), email_verified=user.get("email_verified"))
        if self.claims_hook:
            claims = self.claims_hook(claims)
        key = self.unpublished if self.sign_with_unpublished_key else self.keys[-1]
        if self.unsigned:
            part = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")  # noqa: E731
            id_token = f"{part({'alg': 'none', 'typ': 'JWT', 'kid': key.kid})}.{part(claims)}."
        else:
            id_token = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})
        access = secrets.token_urlsafe(16)
        self.codes[f"access:{access}"] = {"user": user}
        return web.json_response({"access_token": access, "token_type": "Bearer", "expires_in": 300,
                                  "id_token": id_token})

    async def userinfo(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        grant = self.codes.get(f"access:{token}")
        if grant is None:
            return web.json_response({"error": "invalid_token"}, status=401)
        user = grant["user"]
        return web.json_response({"sub": user["sub"], "email": user.get("email"),
                                  "email_verified": user.get("email_verified"), "name": user.get("name")})

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> FakeIdentityProvider:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.issuer = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
