"""The backend template of drivers/README.md runs as written and passes every check."""

from __future__ import annotations

import re
from pathlib import Path

from dklscope.drivers import DriverServer, MicroscopeClient
from dklscope.drivers.conformance import CHECKS, run_checks

README = Path(__file__).resolve().parents[2] / "drivers" / "README.md"


def template_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    (template,) = [b for b in blocks if "class MyScopeBackend" in b]
    return template


def test_the_readme_template_passes_the_conformance_checks():
    namespace: dict = {"__name__": "my_scope"}  # not __main__: do not serve on port 5555
    exec(compile(template_source(), str(README), "exec"), namespace)
    with DriverServer(namespace["MyScopeBackend"](), "tcp://127.0.0.1:0") as server:
        results = run_checks(server.endpoint, timeout_s=5.0)
        with MicroscopeClient(server.endpoint, timeout_s=5.0) as client:
            capabilities = client.hello()["capabilities"]
    assert [r.name for r in results] == list(CHECKS)
    assert [r for r in results if not r.passed] == []
    assert "blank" in capabilities  # the dead-man switch found its hook
