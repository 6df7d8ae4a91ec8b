"""The triggers that keep agent_latest (migration 0004), as SQL for both dialects.

Shared by the migrations that create them (0004) and the one that renamed agent_latest's
columns (0013): each passes its own frozen copy of the groups, so a later change here must
keep the SQL these groups give the same.

A group is (column prefix, condition on the source row `{row}` or None, copied columns): the
trigger on a report table takes NEW as the group's row when it is newer than the one kept
(greatest finished_at, then id). PostgreSQL runs the statements in a plpgsql function named
like the trigger, SQLite in the trigger body.
"""

from __future__ import annotations

Group = tuple[str, str | None, tuple[str, ...]]


def _update_if_newer(group: str, condition: str | None, columns: tuple[str, ...]) -> str:
    sets = ", ".join(
        [f"{group}_id = NEW.id", f"{group}_finished_at = NEW.finished_at"]
        + [f"{group}_{c} = NEW.{c}" for c in columns]
    )
    where = [
        "agent_id = NEW.agent_id",
        f"({group}_id IS NULL OR {group}_finished_at < NEW.finished_at"
        f" OR ({group}_finished_at = NEW.finished_at AND {group}_id < NEW.id))",
    ]
    if condition:
        where.insert(0, condition.format(row="NEW"))
    # Built from the migrations' constants only.
    return f"UPDATE agent_latest SET {sets} WHERE {' AND '.join(where)};"  # noqa: S608


def create(table: str, groups: tuple[Group, ...], dialect: str) -> list[str]:
    """The statements that make `table`'s trigger (and its function on PostgreSQL)."""
    seed = (
        "INSERT OR IGNORE INTO agent_latest (agent_id) VALUES (NEW.agent_id);"
        if dialect == "sqlite"
        else "INSERT INTO agent_latest (agent_id) VALUES (NEW.agent_id) ON CONFLICT DO NOTHING;"
    )
    body = "\n  ".join([seed, *(_update_if_newer(*group) for group in groups)])
    name = f"saveos_latest_{table}"
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW BEGIN\n  {body}\nEND"]
    return [
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n  {body}\n"
        "  RETURN NULL;\nEND\n$$",
        f"CREATE TRIGGER {name} AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
    ]


def drop(table: str, dialect: str) -> list[str]:
    name = f"saveos_latest_{table}"
    if dialect == "sqlite":
        return [f"DROP TRIGGER {name}"]
    return [f"DROP TRIGGER {name} ON {table}", f"DROP FUNCTION {name}()"]
