"""The local process supervisor behind `make run`: embedded stores, migrations, services.

Importing it turns gRPC's fork handlers off (GRPC_ENABLE_FORK_SUPPORT=false, unless set),
which grpc reads once, when it is imported: so every entry point that forks (the supervisor,
the test session, the drills and benchmarks) imports this package before grpc. They fork only
to exec (the supervisor's children with their preexec hook, pg_ctl as PostgreSQL's own user),
where the handlers do nothing useful, and grpcio >= 1.81's crash a child between fork and exec
(grpc/grpc#43055): pg_ctl "died with SIGSEGV", a restarted service never started.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
