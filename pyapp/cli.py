"""The `parley` command: db, migrate, serve, jobs, partitions, rotate-kek, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys


def _cluster():
    from pyapp.config import data_dir
    from pyapp.embedded import EmbeddedCluster

    return EmbeddedCluster(data_dir())


def cmd_db(args) -> int:
    if os.environ.get("DATABASE_URL") and args.action in ("start", "stop"):
        print("DATABASE_URL is set: Parley uses that server and manages no local one.", file=sys.stderr)
        return 2
    cluster = _cluster()
    if args.action == "start":
        cluster.start()
        print(json.dumps(cluster.status()))
    elif args.action == "stop":
        cluster.stop()
        print(json.dumps(cluster.status()))
    elif args.action == "status":
        print(json.dumps(cluster.status()))
        return 0 if cluster.running() else 3
    elif args.action == "url":
        from pyapp.config import ANALYST_ROLE, APP_ROLE, JOBS_ROLE, load_settings

        settings = load_settings(start_embedded=False)
        role = {"analyst": ANALYST_ROLE, "app": APP_ROLE, "jobs": JOBS_ROLE}.get(args.role or "")
        print(settings.role_url(role) if role else settings.admin_url)
    return 0


def cmd_migrate(args) -> int:
    from pyapp.config import load_settings
    from pyapp.migrate import migrate

    applied = migrate(load_settings())
    print(f"migrations applied: {len(applied)} {' '.join(applied)}".strip())
    print("sql/ re-applied; schema current")
    return 0


async def _schema_current(settings) -> tuple[bool, str]:
    import asyncpg

    from pyapp.migrate import schema_status

    conn = await asyncpg.connect(settings.app_url)
    try:
        fingerprint = await conn.fetchval("SELECT fingerprint FROM parley_migrations.schema_state WHERE id = 1")
    except asyncpg.PostgresError:
        fingerprint = None
    finally:
        await conn.close()
    return schema_status(fingerprint)


def cmd_serve(args) -> int:

    from pyapp.app import create_app, serve
    from pyapp.config import load_settings

    settings = load_settings(host=args.host, port=args.port)
    if settings.embedded and args.migrate:
        from pyapp.migrate import migrate

        migrate(settings)
    try:
        current, message = asyncio.run(_schema_current(settings))
    except Exception as exc:
        print(f"cannot reach the database: {exc}", file=sys.stderr)
        return 2
    if not current:
        print(f"refusing to start: {message}", file=sys.stderr)
        return 2
    if args.demo:
        from pyapp.widget.demo import seed_demo

        info = asyncio.run(seed_demo(settings))
        print(f"\n  Console:   {settings.base_url}/console/  (sign in as {info['email']} / {info['password']})")
        print(f"  Demo site: {settings.base_url}/demo  (the widget of the demo tenant)\n", flush=True)
    from pyapp import tracing

    tracing.configure(service="parley-server")  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        asyncio.run(serve(create_app(settings), settings.host, settings.port))
    finally:
        tracing.shutdown()
    return 0


def cmd_jobs(args) -> int:
    from jobs.runner import main as jobs_main

    from pyapp.config import load_settings

    return asyncio.run(jobs_main(load_settings(), once=args.once))


def cmd_rotate_kek(args) -> int:
    """Re-wrap every tenant data key under the current key-encryption key (the first of PARLEY_KEKS),
    after moving LLM API keys stored before the envelope into it.

    Keep the old key in PARLEY_KEKS (after the new one) until this has run on every database:
    servers keep opening secrets with either, so nothing stops meanwhile.
    """
    import asyncpg

    from pyapp.assistant.secrets import move_legacy_keys
    from pyapp.channels.envelope import Keyring, rotate_kek
    from pyapp.config import load_settings

    settings = load_settings()
    keyring = Keyring.from_settings(settings.secret_key)

    async def run() -> tuple[int, int]:
        conn = await asyncpg.connect(settings.admin_url)
        try:
            async with conn.transaction():
                moved = await move_legacy_keys(conn, settings.secret_key)
                return await rotate_kek(conn, keyring), moved
        finally:
            await conn.close()

    done, moved = asyncio.run(run())
    if moved:
        print(f"moved {moved} LLM API key(s) into the envelope", flush=True)
    print(f"re-wrapped {done} data key(s) under {keyring.current}", flush=True)
    return 0


def cmd_partitions(args) -> int:
    """List the partitions of parley's range-partitioned tables, create them ahead, drop expired ones."""
    import asyncpg

    from pyapp.config import load_settings
    from pyapp.ops import partitions

    settings = load_settings()

    async def run() -> int:
        conn = await asyncpg.connect(settings.admin_url)
        try:
            if args.action == "list":
                rows = await partitions.list_partitions(conn, args.table)
                if args.json:
                    print(json.dumps(rows, default=str))
                else:
                    print(partitions.render(rows))
            elif args.action == "create":
                created = await partitions.create_ahead(conn, args.months_ahead, args.table)
                for table, n in created.items():
                    print(f"{table}: {n} partition(s) created")
            else:
                dropped = await partitions.drop_expired(conn, dry_run=args.dry_run, table=args.table)
                verb = "would drop" if args.dry_run else "dropped"
                for row in dropped:
                    print(
                        f"{verb} {row['partition_name']} (to {row['range_to']:%Y-%m-%d},"
                        f" ~{row['row_estimate'] if row['row_estimate'] is not None else '?'} rows, {row['bytes']} bytes)"
                    )
                print(f"{len(dropped)} partition(s) {verb}")
            return 0
        finally:
            await conn.close()

    return asyncio.run(run())


def cmd_users(args) -> int:
    """Operator account recovery without mail: a one-hour password-reset link, printed here only."""
    from urllib.parse import quote

    import asyncpg

    from pyapp.accounts.common import RESET_PATH
    from pyapp.config import load_settings
    from pyapp.security import new_opaque_token

    settings = load_settings()
    token, token_hash = new_opaque_token()

    async def run():
        conn = await asyncpg.connect(settings.admin_url)
        try:
            async with conn.transaction():  # the same reset the forgot-password page makes, audited as such
                return await conn.fetchval("SELECT parley.request_password_reset($1, $2)", args.email, token_hash)
        finally:
            await conn.close()

    if asyncio.run(run()) is None:
        print(f"no account with the email {args.email}", file=sys.stderr)
        return 1
    # To the operator's terminal, never to a log: whoever has the link can set the password.
    print(f"{settings.base_url}{RESET_PATH}?token={quote(token)}")
    print("The link works once, for one hour.", file=sys.stderr)
    return 0


def cmd_embeddings(args) -> int:
    """Export the local model to ONNX ahead of the first start (else the first load does it)."""
    from pyapp.providers.embeddings import EmbeddingError, local_model_file

    try:
        print(local_model_file())
    except EmbeddingError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    return 0


def cmd_gdpr(args) -> int:
    """Export or erase a visitor's data, export a whole workspace, purge deleted workspaces."""
    import uuid as uuid_
    from pathlib import Path

    from pyapp.config import load_settings
    from pyapp.errors import from_postgres
    from pyapp.gdpr import operator

    settings = load_settings()

    async def run() -> int:
        tenant_id = None
        if args.action != "purge" or args.now:
            ref = args.tenant if args.action != "purge" else args.now
            tenant_id = await operator.resolve_tenant(settings.admin_url, ref)
            if tenant_id is None:
                print(f"no workspace {ref}", file=sys.stderr)
                return 1
        conversation = uuid_.UUID(args.conversation) if getattr(args, "conversation", None) else None
        email = getattr(args, "email", None)
        try:
            if args.action == "export" and tenant_id is not None:
                out = Path(args.out)
                scope = await operator.export_to(settings.jobs_url, tenant_id, out, conversation, email)
                print(f"{scope['scope']} export written to {out} ({out.stat().st_size} bytes)")
            elif args.action == "erase" and tenant_id is not None:
                counts = await operator.erase(settings.jobs_url, tenant_id, conversation, email)
                print(json.dumps(counts, sort_keys=True))
            else:
                rows = await operator.purge(settings.admin_url, settings.jobs_url, tenant_id, args.batch)
                print(f"{rows} row(s) purged")
        except LookupError as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except asyncpg.PostgresError as exc:
            error = from_postgres(exc)
            if error is None:
                raise
            print(f"{error.code}: {error.message}", file=sys.stderr)
            return 1
        return 0

    import asyncpg

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    from pyapp import logs

    logs.configure()  # PARLEY_LOG_FORMAT=json: one JSON object per line, with the request/tenant/conversation ids
    parser = argparse.ArgumentParser(prog="parley", description="Parley customer-support chat")
    sub = parser.add_subparsers(dest="command", required=True)
    db = sub.add_parser("db", help="manage the embedded PostgreSQL")
    db.add_argument("action", choices=["start", "stop", "status", "url"])
    db.add_argument(
        "--role",
        choices=["admin", "analyst", "app", "jobs"],
        help="url: the connection URL of this role (default admin; analyst reads the analytics views)",
    )
    db.set_defaults(func=cmd_db)
    sub.add_parser("migrate", help="apply migrations and re-apply sql/").set_defaults(func=cmd_migrate)
    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--demo", action="store_true", help="seed the demo tenant and print where to look")
    serve.add_argument("--migrate", action="store_true", help="migrate first (embedded database only)")
    serve.set_defaults(func=cmd_serve)
    jobs = sub.add_parser("jobs", help="run scheduled SQL jobs and drain queues")
    jobs.add_argument("--once", action="store_true")
    jobs.set_defaults(func=cmd_jobs)
    sub.add_parser("rotate-kek", help="re-wrap tenant data keys under the current PARLEY_KEKS key").set_defaults(
        func=cmd_rotate_kek
    )
    parts = sub.add_parser("partitions", help="list partitions, create them ahead, drop expired ones")
    parts.add_argument("action", nargs="?", choices=["list", "create", "drop"], default="list")
    parts.add_argument("--table", help="only this table (e.g. parley.messages)")
    parts.add_argument("--json", action="store_true", help="list as JSON")
    parts.add_argument("--months-ahead", type=int, default=3, help="create: months after this one (default 3)")
    parts.add_argument("--dry-run", action="store_true", help="drop: only say what would go")
    parts.set_defaults(func=cmd_partitions)
    users = sub.add_parser("users", help="operators: account recovery")
    users_sub = users.add_subparsers(dest="action", required=True)
    reset = users_sub.add_parser("reset-password", help="print a one-hour password-reset link for EMAIL")
    reset.add_argument("email")
    users.set_defaults(func=cmd_users)
    embeddings = sub.add_parser("embeddings", help="the local embedding model")
    embeddings.add_argument("action", choices=["export"], help="export: write its ONNX file now and print where")
    embeddings.set_defaults(func=cmd_embeddings)
    gdpr = sub.add_parser("gdpr", help="export or erase a visitor's data, export a workspace, purge deleted ones")
    gdpr_sub = gdpr.add_subparsers(dest="action", required=True)
    export = gdpr_sub.add_parser("export", help="a zip of a visitor's data, or of the whole workspace")
    erase = gdpr_sub.add_parser("erase", help="erase a visitor's messages, leads, feedback and personal fields")
    for p in (export, erase):
        p.add_argument("tenant", help="the workspace's slug or id")
        p.add_argument("--conversation", help="the visitor of this conversation")
        p.add_argument("--email", help="the visitor who left this email in a lead form")
    export.add_argument("--out", required=True, help="the zip file to write")
    purge = gdpr_sub.add_parser("purge", help="purge deleted workspaces whose grace period is over")
    purge.add_argument("--now", metavar="TENANT", help="end this deleted workspace's grace first (slug or id)")
    purge.add_argument("--batch", type=int, default=5000, help="rows per transaction (default 5000)")
    gdpr.set_defaults(func=cmd_gdpr)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
