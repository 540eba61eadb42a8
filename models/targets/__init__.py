"""Target networks; importing this package registers them in models.registry."""
from models.targets import cifar_resnet, resnet, vgg  # noqa: F401  (imported for registration)
