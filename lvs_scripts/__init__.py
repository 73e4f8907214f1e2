"""lvs_scripts: LVS-DR director and real servers from one config file."""
