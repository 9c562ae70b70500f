"""gpuforge node side: GPU catalog, detection, node validation, benchmarks and reports."""

__version__ = "0.1.0"
