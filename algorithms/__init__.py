"""Algorithm plugins: one file each, configured by a YAML in ``conf/algorithm/``."""
