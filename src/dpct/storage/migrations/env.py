"""Alembic environment: migrations always run on a connection dpct hands over."""

from alembic import context

from dpct.storage._schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
context.run_migrations()
