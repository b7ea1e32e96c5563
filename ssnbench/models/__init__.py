"""Models built by name: `build_model(arch, **options)` with arch in `ssn`, `dual`, `single`."""

from ssnbench.models.registry import arch_options, build_model, list_archs, register_model

# importing the families registers them
from ssnbench.models import dual, single, ssn  # noqa: E402, F401, I001  isort: skip

__all__ = ["arch_options", "build_model", "list_archs", "register_model"]
