"""The local process supervisor behind `make run`: embedded stores, migrations, services."""
