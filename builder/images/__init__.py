"""Golden OS images: definitions (images/*.yaml), the build runbook, disk/netboot/Packer outputs."""
