"""Target networks; importing this package registers them in models.registry.

Every target subclasses models.targets.base.Target, the one declared interface.
"""
from models.targets import cifar_resnet, resnet, resnet3d, vgg  # noqa: F401  (imported for registration)
