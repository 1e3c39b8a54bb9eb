"""Test harness for services built on teaclave-ma: fake auditors, and (in the pytest plugin)
fixtures that hand them out. Insecure by design; never import it from production code."""

from teaclave_ma.testing.auditors import AuditorPanel, FakeAuditor

__all__ = ["AuditorPanel", "FakeAuditor"]
