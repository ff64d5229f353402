"""Small shared utilities: atomic I/O, component configs, progress bars, JSONL logs, threads."""

from featureflow.utils.component_io import load_component, save_component
from featureflow.utils.config import (
    BUILTIN_COMPONENTS,
    COMPONENT_PACKAGES,
    COMPONENTS,
    Configurable,
    build_component,
    find_component,
    int_list,
    record_config,
    register_component,
)
from featureflow.utils.io import atomic_write, load_safetensors, save_json, save_safetensors
from featureflow.utils.logging import JSONLLogger
from featureflow.utils.progress import progress_bar
from featureflow.utils.threads import default_threads, set_threads

__all__ = [
    "COMPONENTS",
    "BUILTIN_COMPONENTS",
    "COMPONENT_PACKAGES",
    "Configurable",
    "register_component",
    "find_component",
    "build_component",
    "record_config",
    "int_list",
    "save_component",
    "load_component",
    "atomic_write",
    "save_safetensors",
    "load_safetensors",
    "save_json",
    "JSONLLogger",
    "progress_bar",
    "default_threads",
    "set_threads",
]
