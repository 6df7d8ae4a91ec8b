"""Declared databases: config validation and pure argv builders for dump, load and queries.

Nothing here runs a process. Credentials never appear in argv or in environment values: a
PostgreSQL entry names a pgpass file (PGPASSFILE=path), a MariaDB/MySQL entry an option file
(--defaults-extra-file=path), both 0600; or neither, for socket peer authentication.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from saveos_agent.errors import AgentError

Argv = Tuple[str, ...]

TYPES = ("postgresql", "mariadb", "mysql", "sqlite")
# PostgreSQL dumps stream, so the directory format (many files) cannot be used.
FORMATS = {"postgresql": ("custom", "plain", "tar"), "mariadb": ("sql",), "mysql": ("sql",),
           "sqlite": ("sql",)}  # fmt: skip
DEFAULT_FORMAT = {"postgresql": "custom", "mariadb": "sql", "mysql": "sql", "sqlite": "sql"}
# Names SaveOS quotes itself (file names in the archive, CREATE/DROP DATABASE): no quoting tricks.
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
ALL = "all"
GLOBALS = "globals"  # pg_dumpall --globals-only, beside each database of a PostgreSQL `all`
# Databases a MariaDB/MySQL `all` leaves out: the server's own, rebuilt by its install.
MYSQL_SYSTEM = ("information_schema", "mysql", "performance_schema", "sys")
# Environment a dump or load never inherits from the agent: secrets must come from files.
SECRET_ENV = ("PGPASSWORD", "MYSQL_PWD", "PGPASSFILE")

_KEYS = {
    "type", "name", "host", "port", "socket", "user", "options", "format", "credentials_file",
    "path", "drill_query", "run_as",
}  # fmt: skip


@dataclass(frozen=True)
class Database:
    type: str
    name: str
    host: Optional[str] = None
    port: Optional[int] = None
    socket: Optional[str] = None
    user: Optional[str] = None
    options: Tuple[str, ...] = ()
    format: str = "sql"
    credentials_file: Optional[str] = None
    path: Optional[str] = None  # sqlite: the database file
    drill_query: Optional[str] = None
    run_as: Optional[str] = None  # OS user for peer authentication over the socket

    @property
    def key(self) -> str:
        return f"{self.type}/{self.name}"

    def one(self, name: str) -> "Database":
        """This entry for one database of its server (an `all` expands into these)."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return Database(**{**fields, "name": name})


@dataclass
class DumpItem:
    """One stream in the archive: which entry, which database, and the file name it gets."""

    db: Database
    name: str
    kind: str = "database"  # or "globals"
    fields: Dict[str, Any] = field(default_factory=dict)

    @property
    def file_name(self) -> str:
        # '+' is not in NAME, so the globals never collide with a database of that name
        if self.kind == GLOBALS:
            return f"{self.db.type}+{GLOBALS}.sql"
        ext = {"custom": "pgdump", "tar": "tar", "plain": "sql", "sql": "sql"}[self.format]
        return f"{self.db.type}-{self.name}.{ext}"

    @property
    def format(self) -> str:
        return "plain" if self.kind == GLOBALS else self.db.format


def _err(index: int, message: str) -> AgentError:
    return AgentError(f"config key 'databases[{index}]{message}")


def validate(raw: Any, check_paths: bool = True) -> List[Database]:
    if not isinstance(raw, list):
        raise AgentError("config key 'databases' must be a list")
    out: List[Database] = []
    seen = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise _err(i, "' must be an object")
        extra = sorted(set(item) - _KEYS)
        if extra:
            raise AgentError(f"unknown config key 'databases[{i}].{extra[0]}'")
        kind = item.get("type")
        if kind not in TYPES:
            raise _err(i, f".type' must be one of {', '.join(TYPES)}, got {kind!r}")
        name = item.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise _err(i, f".name' must be a database name (letters, digits, _ . -) or all, "
                          f"got {name!r}")  # fmt: skip
        for key in ("host", "socket", "user", "credentials_file", "path", "drill_query", "run_as"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise _err(i, f".{key}' must be a string")
        port = item.get("port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise _err(i, f".port' must be a port number, got {port!r}")
        options = item.get("options") or []
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise _err(i, ".options' must be a list of strings")
        fmt = item.get("format") or DEFAULT_FORMAT[kind]
        if fmt not in FORMATS[kind]:
            raise _err(i, f".format' for {kind} must be one of {', '.join(FORMATS[kind])}, "
                          f"got {fmt!r}")  # fmt: skip
        db = Database(
            type=kind,
            name=name,
            host=item.get("host"),
            port=port,
            socket=item.get("socket"),
            user=item.get("user"),
            options=tuple(options),
            format=fmt,
            credentials_file=item.get("credentials_file"),
            path=item.get("path"),
            drill_query=item.get("drill_query"),
            run_as=item.get("run_as"),
        )
        if kind == "sqlite":
            if not db.path or not os.path.isabs(db.path):
                raise _err(i, ".path' (the database file, absolute) is required for sqlite")
            if name == ALL:
                raise _err(i, ".name' all has no meaning for sqlite: name the file's database")
        elif db.path:
            raise _err(i, ".path' is for sqlite only")
        if db.host and db.socket:
            raise _err(i, "': host and socket are exclusive")
        for key in ("credentials_file", "socket"):
            value = getattr(db, key)
            if value and not os.path.isabs(value):
                raise _err(i, f".{key}' must be an absolute path")
        if db.credentials_file and kind == "sqlite":
            raise _err(i, ".credentials_file' has no meaning for sqlite")
        if db.credentials_file and check_paths:
            from saveos_agent.config import check_private

            check_private(db.credentials_file, f"databases[{i}].credentials_file")
        if db.key in seen:
            raise _err(i, f"': {db.key} is declared twice")
        seen.add(db.key)
        out.append(db)
    return out


# ---- connection arguments --------------------------------------------------------------------


def _pg_conn(db: Database) -> Argv:
    argv: Argv = ("--no-password",)  # a missing credential fails at once, never prompts
    host = db.socket or db.host
    if host:
        argv += ("--host", host)
    if db.port:
        argv += ("--port", str(db.port))
    if db.user:
        argv += ("--username", db.user)
    return argv


def _my_conn(db: Database) -> Argv:
    # --defaults-extra-file must come first; it holds user and password, never argv.
    argv: Argv = (f"--defaults-extra-file={db.credentials_file}",) if db.credentials_file else ()
    if db.socket:
        argv += (f"--socket={db.socket}",)
    if db.host:
        argv += (f"--host={db.host}", "--protocol=TCP")
    if db.port:
        argv += (f"--port={db.port}",)
    if db.user:
        argv += (f"--user={db.user}",)
    return argv


def _runas(db: Database, argv: Argv) -> Argv:
    return ("runuser", "-u", db.run_as, "--", *argv) if db.run_as else argv


def _my_bin(db: Database, tool: str) -> str:
    if db.type == "mariadb":
        return {"dump": "mariadb-dump", "client": "mariadb"}[tool]
    return {"dump": "mysqldump", "client": "mysql"}[tool]


def env(db: Database, base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment of a dump or load: no inherited secrets; PGPASSFILE names the 0600 file."""
    out = {k: v for k, v in (base if base is not None else os.environ).items()}
    for name in SECRET_ENV:
        out.pop(name, None)
    if db.type == "postgresql" and db.credentials_file:
        out["PGPASSFILE"] = db.credentials_file
    out.setdefault("LANG", "C.UTF-8")
    return out


# ---- dump ------------------------------------------------------------------------------------


def list_argv(db: Database) -> Argv:
    """Names of the databases an `all` entry stands for, one per line."""
    if db.type == "postgresql":
        sql = (
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
            "ORDER BY datname"
        )
        return _runas(db, ("psql", *_pg_conn(db), "-X", "-At", "-d", "postgres", "-c", sql))
    excluded = ", ".join(f"'{n}'" for n in MYSQL_SYSTEM)
    sql = (
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN "  # noqa: S608 - constants
        f"({excluded}) ORDER BY schema_name"
    )
    return _runas(db, (_my_bin(db, "client"), *_my_conn(db), "-N", "-B", "-e", sql))


def dump_argv(item: DumpItem) -> Argv:
    db = item.db
    if db.type == "postgresql":
        if item.kind == GLOBALS:
            return _runas(db, ("pg_dumpall", *_pg_conn(db), "--globals-only"))
        flag = {"custom": "c", "plain": "p", "tar": "t"}[db.format]
        return _runas(
            db, ("pg_dump", *_pg_conn(db), f"--format={flag}", *db.options, "--", item.name)
        )
    if db.type == "sqlite":
        return ("sqlite3", "-readonly", "-batch", "-bail", *db.options, db.path or "", ".dump")
    return _runas(
        db,
        (
            _my_bin(db, "dump"),
            *_my_conn(db),
            "--single-transaction",
            "--routines",
            "--triggers",
            *db.options,
            "--",
            item.name,
        ),
    )


# ---- restore and drill -----------------------------------------------------------------------
# SQL goes in on the client's stdin; names are NAME-checked, so double quotes (PostgreSQL) and
# backticks (MariaDB) quote them safely.

TABLE_COUNT = {
    "postgresql": (
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'"
    ),
    "mariadb": "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()",
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type IN ('table', 'view')",
}
TABLE_COUNT["mysql"] = TABLE_COUNT["mariadb"]


def check_name(name: str, what: str = "database") -> str:
    if not NAME.match(name or ""):
        raise AgentError(f"{what} name {name!r} is not one SaveOS handles (letters, digits, _ . -)")
    return name


def check_wanted(wanted: str, what: str = "--database") -> str:
    """What a restore may name: all, NAME, or TYPE/NAME (TYPE/all: a database called all)."""
    kind, _, name = (wanted or "").rpartition("/")
    if (kind and kind not in TYPES) or not NAME.match(name):
        raise AgentError(
            f"{what} {wanted!r}: give all, a database NAME (letters, digits, _ . -) or "
            f"TYPE/NAME with TYPE one of {', '.join(TYPES)}"
        )
    return wanted


def client_argv(db: Database, database: Optional[str], stop_on_error: bool = True) -> Argv:
    """A client reading SQL on stdin, connected to `database` (None: the server's default),
    stopping at the first error (PostgreSQL: unless told not to), printing bare values."""
    if db.type == "postgresql":
        stop = ("-v", "ON_ERROR_STOP=1") if stop_on_error else ()
        argv: Argv = ("psql", *_pg_conn(db), "-X", "-q", "-At", *stop)
        return _runas(db, (*argv, "-d", database or "postgres"))
    if db.type == "sqlite":
        return ("sqlite3", "-batch", "-bail", database or db.path or "")
    argv = (_my_bin(db, "client"), *_my_conn(db), "-N", "-B")
    return _runas(db, (*argv, *((database,) if database else ())))


def exists_sql(db: Database, name: str) -> str:
    check_name(name)
    if db.type == "postgresql":
        return f"SELECT count(*) FROM pg_database WHERE datname = '{name}';"  # noqa: S608 - NAME
    return f"SELECT count(*) FROM information_schema.schemata WHERE schema_name = '{name}';"  # noqa: S608


def create_sql(db: Database, name: str) -> str:
    check_name(name)
    return f'CREATE DATABASE "{name}";' if db.type == "postgresql" else f"CREATE DATABASE `{name}`;"


def drop_sql(db: Database, name: str) -> str:
    check_name(name)
    if db.type == "postgresql":
        return f'DROP DATABASE IF EXISTS "{name}";'
    return f"DROP DATABASE IF EXISTS `{name}`;"


def load_argv(db: Database, fmt: str, target: str) -> Argv:
    """The loader that reads the dump on stdin into `target` (an existing, empty database)."""
    if db.type == "postgresql" and fmt in ("custom", "tar"):
        flag = {"custom": "c", "tar": "t"}[fmt]
        return _runas(
            db, ("pg_restore", *_pg_conn(db), f"--format={flag}", "--exit-on-error", "-d", target)
        )
    return client_argv(db, target)


def sanity_query(db: Database) -> str:
    return db.drill_query or TABLE_COUNT[db.type]


def summary(databases: Sequence[Database]) -> List[Dict[str, Any]]:
    return [{"type": d.type, "name": d.name, "format": d.format} for d in databases]
