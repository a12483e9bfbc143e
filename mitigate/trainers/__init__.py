"""Lightning training: one module for every method, and a fit that handles the pitfalls."""

from mitigate.trainers.fit import fit, images_loader, quiet_lightning
from mitigate.trainers.methods import METHODS, method_names
from mitigate.trainers.module import ClassifierModule

__all__ = ["METHODS", "ClassifierModule", "fit", "images_loader", "method_names", "quiet_lightning"]
