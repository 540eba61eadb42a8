"""Target networks: each module registers its factories in models.registry.TARGETS, which imports
every module here on its first lookup.

Every target subclasses models.targets.base.Target, the one declared interface.
"""
