"""NGC containers: a schema-checked registry of NVIDIA's images (data/ngc.yaml), pure compatibility rules against a
node's driver and GPUs, and the Docker edge that pulls, runs and smoke-tests them (through a mirror when set)."""
