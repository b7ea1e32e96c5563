"""Models built by name: `build_model(arch, **options)` with arch in `ssn`, `dual`, `single`."""

# importing the families registers them
from ssnbench.models import dual, single, ssn  # noqa: F401
from ssnbench.models.registry import arch_options, build_model, list_archs, register_model

__all__ = ["arch_options", "build_model", "list_archs", "register_model"]
