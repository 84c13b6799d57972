"""The protocols, one subpackage or module each, named by ``conf/protocol/*.yaml``."""
